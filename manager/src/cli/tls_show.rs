//! `tether-manager tls show`: the generated CA and server certificate in a data dir (subject,
//! SANs, validity, SHA-256 fingerprints, days left, what a strict client would refuse), read
//! from the files without a running manager.
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Args, Subcommand};
use serde_json::{json, Value};

use crate::config::DEFAULT_DATA_DIR;
use crate::tls::inspect::{self, CertInfo, Role};
use crate::tls::{TlsError, CA_CERT, RENEW_WITHIN_DAYS, SERVER_CERT};

/// `tls …`
#[derive(Debug, Subcommand)]
pub enum TlsCmd {
    /// The generated CA and server certificate in use, and when they expire.
    Show(TlsShowArgs),
}

/// `tls show` options.
#[derive(Debug, Args)]
pub struct TlsShowArgs {
    /// Data directory.
    #[arg(long, env = "TETHER_DATA_DIR", default_value = DEFAULT_DATA_DIR)]
    pub data_dir: PathBuf,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
}

/// Runs `tls …`.
pub fn run(cmd: TlsCmd) -> ExitCode {
    match cmd {
        TlsCmd::Show(args) => show(&args),
    }
}

fn show(args: &TlsShowArgs) -> ExitCode {
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let read = |name: &str, role: Role| -> Result<(PathBuf, CertInfo), TlsError> {
        let path = args.data_dir.join(name);
        inspect::read(&path, role).map(|info| (path, info))
    };
    let (ca, server) = match (read(CA_CERT, Role::Ca), read(SERVER_CERT, Role::Leaf)) {
        (Ok(ca), Ok(server)) => (ca, server),
        (Err(e), _) | (_, Err(e)) => {
            let msg = format!(
                "no readable generated certificate in {} ({e}); run `tether-manager init` or `serve` first",
                args.data_dir.display()
            );
            if args.json {
                println!("{}", json!({ "error": msg }));
            } else {
                eprintln!("error: {msg}");
            }
            return ExitCode::from(super::EXIT_USAGE);
        }
    };
    let rotate = ca_rotation_hint(&args.data_dir);
    if args.json {
        let out = json!({
            "data_dir": args.data_dir.display().to_string(),
            "ca": cert_json(&ca.0, &ca.1, now),
            "server": cert_json(&server.0, &server.1, now),
            "renew_within_days": RENEW_WITHIN_DAYS,
            "ca_rotation": (!ca.1.strict_problems.is_empty()).then_some(rotate),
        });
        println!("{}", serde_json::to_string_pretty(&out).unwrap_or_else(|_| out.to_string()));
        return ExitCode::SUCCESS;
    }
    print!("{}", cert_text("CA", &ca.0, &ca.1, now));
    if !ca.1.strict_problems.is_empty() {
        println!(
            "  The CA is not accepted by strict clients. Delegates pin it, so it is kept; to rotate it (every delegate then needs the new ca.pem):\n    {rotate}"
        );
    }
    println!();
    print!("{}", cert_text("Server certificate", &server.0, &server.1, now));
    if !server.1.strict_problems.is_empty() {
        println!("  `serve` issues a new one from the CA at its next start.");
    } else {
        println!(
            "  `serve` renews it from the same CA at start when {RENEW_WITHIN_DAYS} days or fewer are left."
        );
    }
    ExitCode::SUCCESS
}

fn ca_rotation_hint(data_dir: &Path) -> String {
    let d = data_dir.display();
    format!("stop the manager; mv {d}/ca.pem {d}/ca.pem.old; mv {d}/ca-key.pem {d}/ca-key.pem.old; start `tether-manager serve` (a new CA and server certificate are generated)")
}

/// Days left until `not_after` (negative once expired), rounded down.
fn days_left(info: &CertInfo, now: i64) -> i64 {
    info.not_after.saturating_sub(now).div_euclid(86_400)
}

/// `2026-12-01T21:50:46Z`.
fn rfc3339(unix: i64) -> String {
    match time::OffsetDateTime::from_unix_timestamp(unix) {
        Ok(t) => format!(
            "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z",
            t.year(),
            u8::from(t.month()),
            t.day(),
            t.hour(),
            t.minute(),
            t.second()
        ),
        Err(_) => unix.to_string(),
    }
}

fn cert_json(path: &Path, info: &CertInfo, now: i64) -> Value {
    json!({
        "path": path.display().to_string(),
        "subject": info.subject,
        "issuer": info.issuer,
        "sans": info.sans,
        "not_before": rfc3339(info.not_before),
        "not_after": rfc3339(info.not_after),
        "sha256": info.sha256,
        "days_left": days_left(info, now),
        "strict_clean": info.strict_problems.is_empty(),
        "strict_problems": info.strict_problems,
    })
}

fn cert_text(title: &str, path: &Path, info: &CertInfo, now: i64) -> String {
    let sans = if info.sans.is_empty() { "-".to_owned() } else { info.sans.join(", ") };
    let strict = if info.strict_problems.is_empty() {
        "yes".to_owned()
    } else {
        format!("NO ({})", info.strict_problems.join(", "))
    };
    format!(
        "{title}: {}\n  subject:      {}\n  issuer:       {}\n  SANs:         {sans}\n  not before:   {}\n  not after:    {} ({} days left)\n  SHA-256:      {}\n  strict-clean: {strict}\n",
        path.display(),
        info.subject,
        info.issuer,
        rfc3339(info.not_before),
        rfc3339(info.not_after),
        days_left(info, now),
        info.sha256,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dates_are_rfc3339_utc() {
        assert_eq!(rfc3339(0), "1970-01-01T00:00:00Z");
        assert_eq!(rfc3339(1_704_067_200), "2024-01-01T00:00:00Z");
    }
}
