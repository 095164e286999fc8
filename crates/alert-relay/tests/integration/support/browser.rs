//! Headless Chromium for the console tests: Debian's `chromedriver` on a free loopback port, one
//! WebDriver session (fantoccini over plain HTTP) with a phone's or a desktop's viewport, and the
//! few actions the tests need. Chromedriver and every Chrome process die with the [`Browser`], on a panic too;
//! a watcher shell kills them if the test process itself is killed.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use fantoccini::wd::{Capabilities, TimeoutConfiguration};
use fantoccini::{Client, ClientBuilder, Locator};
use hyper_util::client::legacy::connect::HttpConnector;
use serde_json::{Value, json};

/// A phone's viewport (an iPhone 12-15 in CSS pixels).
pub(crate) const PHONE: (u32, u32) = (390, 844);
/// A laptop's viewport.
pub(crate) const DESKTOP: (u32, u32) = (1280, 900);

/// How long `click`, `fill`, `text` and `attr` wait for their element to appear.
const FIND_WAIT: Duration = Duration::from_secs(5);

const INSTALL_HINT: &str = "install Debian's chromium and chromium-driver \
     (`apt-get install chromium chromium-driver`; .ci/run does)";

/// One headless Chrome window of a fixed size, driven through its own chromedriver.
pub(crate) struct Browser {
    client: Client,
    width: u32,
    height: u32,
    // Dropped after `client`: kills chromedriver and Chrome, then removes their files.
    driver: Driver,
}

/// The chromedriver child, leader of a process group that Chrome's processes stay in.
struct Driver {
    child: Child,
    log: Arc<Mutex<Vec<String>>>,
    // Chrome's profile (`profile/`) and chromedriver's and Chrome's `TMPDIR` (`tmp/`): theirs
    // are left behind when they are killed.
    scratch: tempfile::TempDir,
}

impl Drop for Driver {
    fn drop(&mut self) {
        kill_group(self.child.id());
        let _ = self.child.wait();
    }
}

/// SIGKILL to the process group `leader` leads.
fn kill_group(leader: u32) {
    let _ = Command::new("kill")
        .args(["-KILL", "--", &format!("-{leader}")])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status();
}

/// `name` on `PATH`, else under /usr/bin.
fn find_program(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/bin")])
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

impl Driver {
    /// Starts chromedriver on a port it picks itself (`--port=0`) and waits for that port.
    fn start() -> (Driver, u16) {
        let program = find_program("chromedriver")
            .unwrap_or_else(|| panic!("chromedriver not found: {INSTALL_HINT}"));
        let scratch = tempfile::Builder::new()
            .prefix("chrome-")
            .tempdir()
            .expect("Chrome's scratch directory");
        std::fs::create_dir(scratch.path().join("tmp")).expect("Chrome's TMPDIR");
        let mut command = Command::new(&program);
        command
            .args(["--port=0", "--allowed-ips=127.0.0.1"])
            .env("TMPDIR", scratch.path().join("tmp"))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        std::os::unix::process::CommandExt::process_group(&mut command, 0);
        let mut child = command
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start {}: {e}", program.display()));
        let (tx, rx) = mpsc::channel();
        let log = Arc::new(Mutex::new(Vec::new()));
        let outputs = [
            child
                .stdout
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
            child
                .stderr
                .take()
                .map(|s| Box::new(s) as Box<dyn std::io::Read + Send>),
        ];
        // Read on after the port, so chromedriver never blocks on a full pipe.
        for stream in outputs.into_iter().flatten() {
            let (tx, log) = (tx.clone(), Arc::clone(&log));
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    log.lock().expect("log").push(line.clone());
                    let _ = tx.send(line);
                }
            });
        }
        drop(tx);
        let driver = Driver {
            child,
            log,
            scratch,
        };
        driver.watch();
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let Ok(line) = rx.recv_timeout(left) else {
                panic!(
                    "chromedriver did not say its port in 20 s; its output:\n{}",
                    driver.log()
                );
            };
            if let Some(port) = line
                .split("started successfully on port ")
                .nth(1)
                .and_then(|rest| rest.trim_end_matches('.').parse().ok())
            {
                return (driver, port);
            }
        }
    }

    /// A shell that kills the process group and removes their files once this test process
    /// ends, should it end without dropping the `Driver` (killed, or `exit`); it leaves by
    /// itself once the group is gone. (`sh` is dash: its `kill` takes no `--`.)
    fn watch(&self) {
        let script = format!(
            "while kill -0 {me} 2>/dev/null; do kill -0 -{group} 2>/dev/null || exit 0; sleep 1; done; \
             kill -KILL -{group} 2>/dev/null; rm -rf '{scratch}'",
            me = std::process::id(),
            group = self.child.id(),
            scratch = self.scratch.path().display(),
        );
        Command::new("sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .map(drop)
            .expect("spawn the chromedriver watcher shell");
    }

    fn log(&self) -> String {
        self.log.lock().expect("log").join("\n")
    }
}

/// The session's capabilities: headless Chromium (`binary`) with its profile in `profile` and a
/// `width` x `height` viewport. The viewport is emulated: a headless window's size counts its
/// (invisible) toolbars and is at least 500 px wide. Below 800 px it is a phone's (touch,
/// `<meta name=viewport>` honoured), as a phone lays a page out. `--no-sandbox` because CI runs
/// as root, where Chrome's sandbox refuses to start.
fn capabilities(binary: &Path, profile: &Path, width: u32, height: u32) -> Capabilities {
    let phone = width < 800;
    let mut caps = Capabilities::new();
    caps.insert("browserName".into(), json!("chrome"));
    let options = json!({
        "binary": binary,
        "mobileEmulation": {
            "deviceMetrics": { "width": width, "height": height, "pixelRatio": 1, "mobile": phone, "touch": phone },
        },
        "args": [
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-dev-shm-usage",
            "--hide-scrollbars",
            "--lang=en-US",
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", profile.display()),
        ],
    });
    caps.insert("goog:chromeOptions".into(), options);
    caps
}

impl Browser {
    /// A headless Chrome whose viewport is `width` x `height` CSS pixels. Panics, naming the
    /// Debian packages, when chromium or chromedriver is missing: never a silent skip.
    pub(crate) async fn start(width: u32, height: u32) -> Browser {
        let chromium = find_program("chromium")
            .unwrap_or_else(|| panic!("chromium not found: {INSTALL_HINT}"));
        let (driver, port) = Driver::start();
        let client = ClientBuilder::new(HttpConnector::new())
            .capabilities(capabilities(
                &chromium,
                &driver.scratch.path().join("profile"),
                width,
                height,
            ))
            .connect(&format!("http://127.0.0.1:{port}"))
            .await
            .unwrap_or_else(|e| {
                panic!(
                    "no WebDriver session from chromedriver: {e}; its output:\n{}",
                    driver.log()
                )
            });
        client
            .update_timeouts(TimeoutConfiguration::new(
                Some(Duration::from_secs(10)),
                Some(Duration::from_secs(20)),
                Some(Duration::ZERO),
            ))
            .await
            .expect("set the session's timeouts");
        let browser = Browser {
            client,
            width,
            height,
            driver,
        };
        // A page as the console's are (sized to the device), for a phone too.
        browser
            .goto(
                "data:text/html,<meta name=viewport content='width=device-width,initial-scale=1'>",
            )
            .await;
        let viewport = browser
            .execute("return [window.innerWidth, window.innerHeight];", vec![])
            .await;
        assert_eq!(
            viewport,
            json!([width, height]),
            "Chrome's viewport is not the size asked for"
        );
        browser
    }

    /// [`PHONE`]-sized.
    pub(crate) async fn phone() -> Browser {
        Self::start(PHONE.0, PHONE.1).await
    }

    /// [`DESKTOP`]-sized.
    pub(crate) async fn desktop() -> Browser {
        Self::start(DESKTOP.0, DESKTOP.1).await
    }

    /// The viewport's (width, height).
    pub(crate) fn size(&self) -> (u32, u32) {
        (self.width, self.height)
    }

    /// The ids of chromedriver and of Chrome's browser process (as chromedriver reports it).
    pub(crate) fn processes(&self) -> Vec<u32> {
        let chrome = self
            .client
            .capabilities()
            .and_then(|c| c.get("goog:processID"))
            .and_then(Value::as_u64)
            .and_then(|pid| u32::try_from(pid).ok());
        [Some(self.driver.child.id()), chrome]
            .into_iter()
            .flatten()
            .collect()
    }

    /// The directory of Chrome's profile and temporary files, removed with the `Browser`.
    pub(crate) fn scratch(&self) -> PathBuf {
        self.driver.scratch.path().to_owned()
    }

    /// The fantoccini client, for what the helpers here do not cover.
    pub(crate) fn client(&self) -> &Client {
        &self.client
    }

    /// Opens `url` and waits for it to load.
    pub(crate) async fn goto(&self, url: &str) {
        self.client
            .goto(url)
            .await
            .unwrap_or_else(|e| panic!("cannot open {url}: {e}"));
    }

    /// The URL the window shows.
    pub(crate) async fn url(&self) -> String {
        self.client
            .current_url()
            .await
            .map(String::from)
            .unwrap_or_else(|e| panic!("no current URL: {e}"))
    }

    /// Clicks the first element matching `css` (waiting up to 5 s for it).
    pub(crate) async fn click(&self, css: &str) {
        let element = self.find(css).await;
        element
            .click()
            .await
            .unwrap_or_else(|e| panic!("cannot click {css:?}: {e}"));
    }

    /// Replaces the value of the form field matching `css` with `text`, typed key by key.
    pub(crate) async fn fill(&self, css: &str, text: &str) {
        let element = self.find(css).await;
        element
            .clear()
            .await
            .unwrap_or_else(|e| panic!("cannot clear {css:?}: {e}"));
        element
            .send_keys(text)
            .await
            .unwrap_or_else(|e| panic!("cannot type into {css:?}: {e}"));
    }

    /// The rendered text of the first element matching `css`.
    pub(crate) async fn text(&self, css: &str) -> String {
        let element = self.find(css).await;
        element
            .text()
            .await
            .unwrap_or_else(|e| panic!("no text of {css:?}: {e}"))
    }

    /// The attribute `name` of the first element matching `css`.
    pub(crate) async fn attr(&self, css: &str, name: &str) -> Option<String> {
        let element = self.find(css).await;
        element
            .attr(name)
            .await
            .unwrap_or_else(|e| panic!("no attribute {name} of {css:?}: {e}"))
    }

    /// Runs `script` (a function body; `arguments[i]` are `args`) in the page; what it returns.
    pub(crate) async fn execute(&self, script: &str, args: Vec<Value>) -> Value {
        self.client
            .execute(script, args)
            .await
            .unwrap_or_else(|e| panic!("script failed: {e}\n{script}"))
    }

    /// How many elements match `css` now.
    pub(crate) async fn count(&self, css: &str) -> usize {
        self.client
            .find_all(Locator::Css(css))
            .await
            .map(|all| all.len())
            .unwrap_or_else(|e| panic!("cannot look up {css:?}: {e}"))
    }

    /// Waits until an element matches `css`, or panics after `timeout`.
    pub(crate) async fn wait_for(&self, css: &str, timeout: Duration) {
        self.wait_for_text(css, "", timeout).await;
    }

    /// Waits until an element matching `css` has a text containing `text`, and returns that
    /// element's text; panics after `timeout`. Polls the live page without reloading it, so a
    /// test sees what the page changed by itself; a lookup failing while the page navigates
    /// or replaces the element is tried again.
    pub(crate) async fn wait_for_text(&self, css: &str, text: &str, timeout: Duration) -> String {
        let deadline = Instant::now() + timeout;
        loop {
            let texts = self.texts(css).await;
            if let Ok(texts) = &texts
                && let Some(found) = texts.iter().find(|t| t.contains(text))
            {
                return found.clone();
            }
            if Instant::now() >= deadline {
                panic!(
                    "no {css:?} with the text {text:?} in {timeout:?}; the matching elements: {texts:?}; {}",
                    self.describe().await
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Saves a PNG of the viewport as `NAME-WIDTHxHEIGHT.png` in [`screenshot_dir`] and
    /// returns its path.
    pub(crate) async fn screenshot(&self, name: &str) -> PathBuf {
        let png = self
            .client
            .screenshot()
            .await
            .unwrap_or_else(|e| panic!("no screenshot of {name}: {e}"));
        assert!(
            png.starts_with(b"\x89PNG\r\n\x1a\n"),
            "the screenshot of {name} is not a PNG"
        );
        let dir = screenshot_dir();
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create {}: {e}", dir.display()));
        let path = dir.join(format!("{name}-{}x{}.png", self.width, self.height));
        std::fs::write(&path, png)
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
        path
    }

    /// The first element matching `css`, waiting up to [`FIND_WAIT`] for one.
    async fn find(&self, css: &str) -> fantoccini::elements::Element {
        let deadline = Instant::now() + FIND_WAIT;
        loop {
            match self.client.find(Locator::Css(css)).await {
                Ok(element) => return element,
                Err(e) if e.is_no_such_element() && Instant::now() < deadline => {
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
                Err(e) => panic!("no element {css:?}: {e}; {}", self.describe().await),
            }
        }
    }

    /// The texts of every element matching `css` now, or why they could not be read (the
    /// page navigating, an element replaced between the lookup and the read). A selector that
    /// does not parse panics at once.
    async fn texts(&self, css: &str) -> Result<Vec<String>, fantoccini::error::CmdError> {
        let elements = match self.client.find_all(Locator::Css(css)).await {
            Err(e) if e.is_invalid_selector() => panic!("{css:?} is not a CSS selector: {e}"),
            found => found?,
        };
        let mut texts = Vec::with_capacity(elements.len());
        for element in elements {
            texts.push(element.text().await?);
        }
        Ok(texts)
    }

    /// Where the window is and what it shows, for a failure's message.
    async fn describe(&self) -> String {
        let url = match self.client.current_url().await {
            Ok(url) => String::from(url),
            Err(e) => format!("(no URL: {e})"),
        };
        let body = self
            .client
            .execute(
                "return document.body ? document.body.innerText : '';",
                vec![],
            )
            .await;
        let body = body.ok().and_then(|v| v.as_str().map(str::to_owned));
        let mut body = body.unwrap_or_default();
        if body.len() > 2000 {
            let cut = (0..=2000)
                .rev()
                .find(|&i| body.is_char_boundary(i))
                .unwrap_or(0);
            body.truncate(cut);
            body.push_str(" [...]");
        }
        format!("the page {url} reads:\n{body}")
    }
}

/// Where screenshots go: `$PIFLEET_SCREENSHOTS` when set, else `console-screenshots` in the
/// workspace's target directory (the parent of Cargo's `CARGO_TARGET_TMPDIR`), which CI keeps.
pub(crate) fn screenshot_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("PIFLEET_SCREENSHOTS").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    let tmp = Path::new(env!("CARGO_TARGET_TMPDIR"));
    tmp.parent().unwrap_or(tmp).join("console-screenshots")
}

/// The harness itself, on pages it writes.
mod tests {
    use std::time::Duration;

    use serde_json::json;

    use super::Browser;

    /// A page that changes by itself: `#late` appears after 300 ms, `#status` changes at 600 ms.
    const LIVE_PAGE: &str = "data:text/html;charset=utf-8,<!doctype html><title>live</title>\
        <label>Query <input id=q name=query value=old></label><p id=status>waiting</p>\
        <script>setTimeout(()=>{const p=document.createElement('p');p.id='late';p.textContent='ready';\
        document.body.append(p)},300);setTimeout(()=>{document.getElementById('status').textContent='changed'},600)</script>";

    #[tokio::test]
    async fn the_helpers_see_a_page_change_by_itself_and_type_into_a_field() {
        let browser = Browser::phone().await;
        assert_eq!(browser.size(), super::PHONE);
        browser.goto(LIVE_PAGE).await;
        assert_eq!(browser.client().title().await.expect("title"), "live");
        assert_eq!(browser.text("#status").await, "waiting");
        browser.wait_for("#late", Duration::from_secs(5)).await;
        assert_eq!(
            browser
                .wait_for_text("p", "changed", Duration::from_secs(5))
                .await,
            "changed"
        );
        assert_eq!(browser.attr("#q", "name").await.as_deref(), Some("query"));
        browser.fill("#q", "Pi 4 über wh-2").await;
        assert_eq!(
            browser
                .execute("return document.getElementById('q').value;", vec![])
                .await,
            json!("Pi 4 über wh-2")
        );
        browser.click("#status").await;
        assert!(browser.url().await.starts_with("data:text/html"));
        assert_eq!(browser.count("p").await, 2);
        // A text that never comes fails the test after the timeout, saying what the page shows.
        let browser = std::sync::Arc::new(browser);
        let waiting = std::sync::Arc::clone(&browser);
        let failed = tokio::spawn(async move {
            waiting
                .wait_for_text("#status", "never", Duration::from_millis(300))
                .await
        })
        .await
        .expect_err("wait_for_text gave up");
        let message = failed.into_panic();
        let message = message
            .downcast_ref::<String>()
            .expect("a formatted panic message");
        assert!(
            message.contains(r##"no "#status" with the text "never" in 300ms; the matching elements: Ok(["changed"])"##)
                && message.contains("data:text/html")
                && message.contains("reads:\nQuery \n\nchanged\n\nready"),
            "{message}"
        );
    }

    /// Whether process `pid` is gone (or a zombie, dead and waiting to be reaped).
    fn dead(pid: u32) -> bool {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            Err(_) => true,
            // The state follows the parenthesised command name.
            Ok(stat) => stat
                .rsplit_once(')')
                .is_some_and(|(_, rest)| rest.trim_start().starts_with(['Z', 'X'])),
        }
    }

    #[tokio::test]
    async fn chromedriver_and_chrome_die_with_the_browser_when_a_test_panics() {
        let (tx, rx) = std::sync::mpsc::channel();
        let test = tokio::spawn(async move {
            let browser = Browser::desktop().await;
            browser.goto("data:text/html,<p>about to fail</p>").await;
            tx.send((browser.processes(), browser.scratch()))
                .expect("send");
            panic!("a failing console test");
        });
        assert!(test.await.expect_err("the task panicked").is_panic());
        let (pids, scratch) = rx.recv().expect("the browser started");
        assert_eq!(pids.len(), 2, "chromedriver and Chrome: {pids:?}");
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !pids.iter().all(|&pid| dead(pid)) {
            assert!(
                std::time::Instant::now() < deadline,
                "still running 5 s after the panic: {:?}",
                pids.iter().filter(|&&pid| !dead(pid)).collect::<Vec<_>>()
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(!scratch.exists(), "{} left behind", scratch.display());
    }
}
