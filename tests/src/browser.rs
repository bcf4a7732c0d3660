//! A real headless browser for the console tests: Debian's `chromedriver` (package
//! `chromium-driver`, installed by `tests/run.sh`) on a free loopback port, driving Debian's
//! `chromium` through WebDriver with the `fantoccini` client.
//!
//! - Chromium runs headless with `--no-sandbox` (the tests run as root, where Chromium's
//!   sandbox refuses to start) in a fresh profile directory.
//! - The manager's certificate is signed by its own CA, which this throw-away profile does not
//!   know: the browser is started with `--ignore-certificate-errors` (and the WebDriver
//!   capability `acceptInsecureCerts`). This is for the test browser only; an operator's
//!   browser trusts the CA printed by `tether-manager init` (README, "Console").
//! - Every wait is bounded ([`START_WITHIN`], the page-load and script timeouts); the driver
//!   and the browser it started run in their own process group, which is killed on drop.
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{anyhow, bail, Context, Result};
use fantoccini::wd::TimeoutConfiguration;
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;

use crate::harness::poll;
use crate::harness::process::{target_dir, Proc};

/// How long the driver and the browser session may take to start.
pub const START_WITHIN: Duration = Duration::from_secs(60);
/// How long one page may take to load.
pub const PAGE_LOAD: Duration = Duration::from_secs(30);

/// Where the driver and the browser are looked for.
const DRIVERS: &[&str] = &["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"];
const BROWSERS: &[&str] = &["/usr/lib/chromium/chromium", "/usr/bin/chromium"];

fn first_existing(paths: &[&str], what: &str) -> Result<PathBuf> {
    paths
        .iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .ok_or_else(|| anyhow!("{what} not found at {paths:?}: install Debian's chromium and chromium-driver (tests/run.sh does)"))
}

/// Whether the browser and its driver are installed.
pub fn available() -> bool {
    first_existing(DRIVERS, "chromedriver").is_ok() && first_existing(BROWSERS, "chromium").is_ok()
}

/// A loopback port free on IPv4 and IPv6 (chromedriver binds both and exits when either is
/// taken); bound, read, released: the driver binds it right after.
fn free_port() -> Result<u16> {
    for _ in 0..20 {
        let port = TcpListener::bind("127.0.0.1:0")?.local_addr()?.port();
        // No IPv6 loopback at all is fine: chromedriver then serves IPv4 only.
        let v6_free = match TcpListener::bind(("::1", port)) {
            Ok(_) => true,
            Err(e) => e.kind() != std::io::ErrorKind::AddrInUse,
        };
        if v6_free {
            return Ok(port);
        }
    }
    bail!("no loopback port free on both IPv4 and IPv6")
}

/// How many times a driver that exits at once (its port taken meanwhile) is started again.
const DRIVER_TRIES: usize = 3;

/// A headless Chromium under chromedriver, with a WebDriver session.
#[derive(Debug)]
pub struct Browser {
    /// The WebDriver session.
    pub client: Client,
    driver: Proc,
    _profile: tempfile::TempDir,
}

impl Drop for Browser {
    fn drop(&mut self) {
        // The driver leads its own process group, which holds the browser's processes too.
        let group = format!("-{}", self.driver.pid());
        let _ = Command::new("kill").args(["-KILL", "--", &group]).status();
    }
}

impl Browser {
    /// Starts chromedriver and a headless Chromium, `width` × `height` pixels.
    pub async fn start(width: u32, height: u32) -> Result<Self> {
        Self::launch(width, height, &[]).await
    }

    /// [`Browser::start`] with JavaScript switched off (the pages must work without it).
    pub async fn start_without_javascript(width: u32, height: u32) -> Result<Self> {
        Self::launch(width, height, &["--blink-settings=scriptEnabled=false"]).await
    }

    async fn launch(width: u32, height: u32, extra_args: &[&str]) -> Result<Self> {
        let driver_bin = first_existing(DRIVERS, "chromedriver")?;
        let browser_bin = first_existing(BROWSERS, "chromium")?;
        let (mut driver, port) = Self::driver(&driver_bin).await?;
        let profile = tempfile::tempdir()?;
        let url = format!("http://127.0.0.1:{port}");
        let mut args: Vec<String> = [
            "--headless=new",
            // Tests run as root, where Chromium's sandbox cannot start.
            "--no-sandbox",
            "--disable-dev-shm-usage",
            "--disable-gpu",
            // The manager's self-signed CA is unknown to this throw-away profile (test browser
            // only; see the module comment).
            "--ignore-certificate-errors",
            "--no-first-run",
            "--disable-extensions",
            "--disable-background-networking",
            "--disable-sync",
            "--disable-component-update",
            "--password-store=basic",
        ]
        .iter()
        .map(|a| (*a).to_owned())
        .collect();
        args.push(format!("--window-size={width},{height}"));
        args.push(format!("--user-data-dir={}", profile.path().display()));
        args.extend(extra_args.iter().map(|a| (*a).to_owned()));
        let capabilities = serde_json::json!({
            "browserName": "chrome",
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": browser_bin.display().to_string(),
                "args": args,
            },
        });
        let serde_json::Value::Object(capabilities) = capabilities else {
            bail!("capabilities are an object")
        };
        let client = poll::until("a WebDriver session from chromedriver", START_WITHIN, || {
            let (url, capabilities) = (url.clone(), capabilities.clone());
            let exited = !driver.running();
            async move {
                if exited {
                    bail!("chromedriver exited");
                }
                let mut builder = ClientBuilder::new(HttpConnector::new());
                builder.capabilities(capabilities);
                // One attempt is bounded well inside the whole wait, so a browser launch that
                // hangs (seen once in a dozen runs on a loaded machine) is tried again.
                match tokio::time::timeout(START_WITHIN / 3, builder.connect(&url)).await {
                    Ok(Ok(client)) => Ok(Some(client)),
                    Ok(Err(e)) => Err(anyhow!("connecting: {e}")),
                    Err(_) => Err(anyhow!("the session did not start in time")),
                }
            }
        })
        .await
        .with_context(|| format!("chromedriver log:\n{}", driver.log()))?;
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(PAGE_LOAD),
                Some(PAGE_LOAD),
                Some(Duration::ZERO),
            ))
            .await
            .context("setting the WebDriver timeouts")?;
        Ok(Self { client, driver, _profile: profile })
    }

    /// Starts chromedriver on a free port; once it listens, the process and the port.
    async fn driver(driver_bin: &Path) -> Result<(Proc, u16)> {
        use std::os::unix::process::CommandExt;
        let mut last = String::new();
        for _ in 0..DRIVER_TRIES {
            let port = free_port()?;
            let mut command = Command::new(driver_bin);
            // No `--allowed-ips`: with it the driver listens on every interface (and its IPv6 bind can
            // collide with its own IPv4 one); without it, on loopback only.
            command.arg(format!("--port={port}")).process_group(0);
            let mut driver = Proc::spawn("chromedriver", command)?;
            let listening = poll::until("chromedriver to listen", START_WITHIN, || {
                let exited = !driver.running();
                let ready = driver.log().contains("started successfully");
                async move {
                    match (ready, exited) {
                        (true, _) => Ok(Some(true)),
                        (false, true) => Ok(Some(false)),
                        (false, false) => Ok(None),
                    }
                }
            })
            .await?;
            if listening {
                return Ok((driver, port));
            }
            last = driver.log();
        }
        bail!("chromedriver did not start in {DRIVER_TRIES} tries; last log:\n{last}")
    }

    /// Opens `url` and waits for the load.
    pub async fn goto(&self, url: &str) -> Result<()> {
        self.client.goto(url).await.with_context(|| format!("opening {url}"))
    }

    /// The current page's HTML.
    pub async fn source(&self) -> Result<String> {
        Ok(self.client.source().await?)
    }

    /// The current address.
    pub async fn url(&self) -> Result<String> {
        Ok(self.client.current_url().await?.to_string())
    }

    /// The visible text of the first element matching `css`.
    pub async fn text(&self, css: &str) -> Result<String> {
        let element =
            self.client.find(Locator::Css(css)).await.with_context(|| format!("finding `{css}`"))?;
        Ok(element.text().await?)
    }

    /// Types `text` into the field matching `css` (cleared first).
    pub async fn fill(&self, css: &str, text: &str) -> Result<()> {
        let element =
            self.client.find(Locator::Css(css)).await.with_context(|| format!("finding `{css}`"))?;
        element.clear().await?;
        element.send_keys(text).await.with_context(|| format!("typing into `{css}`"))
    }

    /// Clicks the element matching `css` (a link or a submit button) and waits for the load.
    pub async fn click(&self, css: &str) -> Result<()> {
        let element =
            self.client.find(Locator::Css(css)).await.with_context(|| format!("finding `{css}`"))?;
        element.click().await.with_context(|| format!("clicking `{css}`"))
    }

    /// Waits (bounded) until the address satisfies `check` (a click that submits a form may
    /// return before the next page is there); returns it.
    pub async fn wait_url(&self, what: &str, check: impl Fn(&str) -> bool) -> Result<String> {
        poll::until(format!("the address to be {what}"), PAGE_LOAD, || async {
            let url = self.url().await?;
            Ok(check(&url).then_some(url))
        })
        .await
    }

    /// Whether an element matches `css` on the current page.
    pub async fn has(&self, css: &str) -> Result<bool> {
        Ok(!self.client.find_all(Locator::Css(css)).await?.is_empty())
    }

    /// Waits (bounded) until the page's text satisfies `check`, reloading it first when
    /// `reload` (for pages without live refresh); returns the text.
    pub async fn wait_for_text(
        &self,
        what: &str,
        limit: Duration,
        reload: bool,
        check: impl Fn(&str) -> bool,
    ) -> Result<String> {
        poll::until(what, limit, || async {
            if reload {
                self.client.refresh().await?;
            }
            let text = self.text("body").await?;
            Ok(check(&text).then_some(text))
        })
        .await
    }

    /// Saves a screenshot of the current page as `target/ui-screenshots/<name>.png`.
    pub async fn screenshot(&self, name: &str) -> Result<PathBuf> {
        let png = self.client.screenshot().await.context("taking a screenshot")?;
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)?;
        let path = dir.join(format!("{name}.png"));
        std::fs::write(&path, png)?;
        Ok(path)
    }

    /// Ends the WebDriver session (the browser closes; the driver is killed on drop).
    pub async fn close(self) -> Result<()> {
        self.client.clone().close().await.context("closing the WebDriver session")
    }

    /// The driver's log.
    pub fn driver_log(&self) -> String {
        self.driver.log()
    }
}

/// `target/ui-screenshots/`.
pub fn screenshot_dir() -> PathBuf {
    target_dir().join("ui-screenshots")
}

/// Whether `path` is a PNG file.
pub fn is_png(path: &Path) -> bool {
    std::fs::read(path).is_ok_and(|b| b.starts_with(b"\x89PNG\r\n\x1a\n"))
}
