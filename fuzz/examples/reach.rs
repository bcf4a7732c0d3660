//! Reports how many inputs of each fuzz corpus drive a bound onto a cut inside a multi-byte
//! character (the class that aborted the manager): `reach [DIR]` (default `corpus`). For each
//! payload the targets feed, it reads the `type` (bounded at 64 bytes by `peek_type`) and, for
//! `rotate_ack`, the `detail` (bounded at 512 bytes by the manager), and counts the values
//! longer than the bound and those whose bound falls inside a character. libFuzzer's own
//! `-print_coverage` needs a sanitizer runtime, which the stable, sanitizer-free build lacks.
use std::path::{Path, PathBuf};

use tether_fuzz::input;

#[derive(Default)]
struct Count {
    inputs: usize,
    long_type: usize,
    type_cut_inside: usize,
    long_detail: usize,
    detail_cut_inside: usize,
}

fn inside(s: &str, limit: usize) -> bool {
    s.len() > limit && !s.is_char_boundary(limit)
}

fn payloads<'a>(target: &str, data: &'a [u8]) -> Vec<&'a [u8]> {
    let header = tether_protocol::frame::HEADER_LEN;
    let strip = |f: &'a [u8]| f.get(header..).unwrap_or_default();
    match target {
        "server_handshake" => {
            input::mode(data).map(|(m, rest)| vec![if m % 3 == 0 { strip(rest) } else { rest }])
        }
        "client_handshake" => {
            input::mode(data).map(|(_, rest)| input::chunks(rest, 2).into_iter().map(strip).collect())
        }
        "session_decode" => input::mode(data).map(|(m, rest)| {
            let raw = m & 0b110 == 0;
            input::chunks(rest, 16).into_iter().map(|c| if raw { strip(c) } else { c }).collect()
        }),
        "manager_ack" => Some(input::chunks(data, 16)),
        _ => None,
    }
    .unwrap_or_default()
}

fn count(dir: &Path, target: &str) -> std::io::Result<Count> {
    let mut c = Count::default();
    for entry in std::fs::read_dir(dir.join(target))? {
        let data = std::fs::read(entry?.path())?;
        c.inputs += 1;
        let (mut long_type, mut type_inside, mut long_detail, mut detail_inside) =
            (false, false, false, false);
        for p in payloads(target, &data) {
            let Ok(v) = serde_json::from_slice::<serde_json::Value>(p) else { continue };
            if let Some(t) = v.get("type").and_then(|t| t.as_str()) {
                long_type |= t.len() > 64;
                type_inside |= inside(t, 64);
            }
            if let Some(d) = v.get("detail").and_then(|d| d.as_str()) {
                long_detail |= d.len() > 512;
                detail_inside |= inside(d, 512);
            }
        }
        c.long_type += usize::from(long_type);
        c.type_cut_inside += usize::from(type_inside);
        c.long_detail += usize::from(long_detail);
        c.detail_cut_inside += usize::from(detail_inside);
    }
    Ok(c)
}

fn main() -> std::io::Result<()> {
    let dir = PathBuf::from(std::env::args().nth(1).unwrap_or_else(|| "corpus".into()));
    println!(
        "{:<18} {:>7} {:>10} {:>16} {:>12} {:>18}",
        "target", "inputs", "type>64B", "type cut inside", "detail>512B", "detail cut inside"
    );
    for target in ["server_handshake", "client_handshake", "session_decode", "manager_ack"] {
        let c = count(&dir, target)?;
        println!(
            "{target:<18} {:>7} {:>10} {:>16} {:>12} {:>18}",
            c.inputs, c.long_type, c.type_cut_inside, c.long_detail, c.detail_cut_inside
        );
    }
    Ok(())
}
