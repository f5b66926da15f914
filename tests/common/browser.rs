//! Driving Debian's chromium over WebDriver (chromedriver + fantoccini) for the console's
//! browser tests: sessions, waiting for a page to render, clicking, filling, reading, the
//! accessibility audit, screenshots.

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use fantoccini::{Client, ClientBuilder, Locator};
use serde_json::json;

use super::*;

/// chromedriver on a free port, killed on drop.
pub struct Driver {
    _proc: Proc,
    pub port: u16,
}

impl Driver {
    pub fn start() -> Driver {
        let port = free_port();
        let child = Command::new("chromedriver")
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("chromedriver (scripts/setup installs chromium-driver)");
        let c = bare_client();
        wait_until("chromedriver", Duration::from_secs(20), || {
            c.get(format!("http://127.0.0.1:{port}/status"))
                .send()
                .is_ok_and(|r| r.status().is_success())
        });
        Driver {
            _proc: Proc(child),
            port,
        }
    }

    pub async fn session(&self, width: u32, height: u32) -> Client {
        let caps = json!({
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--disable-background-networking", "--disable-component-update",
                    "--disable-sync", "--no-first-run", "--disable-quic",
                    format!("--window-size={width},{height}"),
                ],
            }
        });
        ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
            .capabilities(caps.as_object().unwrap().clone())
            .connect(&format!("http://127.0.0.1:{}", self.port))
            .await
            .expect("a chromium session")
    }
}

pub fn shots_dir() -> std::path::PathBuf {
    let d = std::path::Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// Wait until page `page` (the hash's first part) says it is rendered (`main[data-ready]`),
/// and return what it says (`page`, `error`, `login`).
pub async fn ready(c: &Client, page: &str) -> String {
    let start = Instant::now();
    let js = "const m = document.getElementById('view'); \
              return m ? [(m.dataset.page || '').split('/')[0], m.dataset.ready || ''] : ['', ''];";
    loop {
        let v = c.execute(js, vec![]).await.unwrap();
        let (p, r) = (
            v[0].as_str().unwrap_or("").to_string(),
            v[1].as_str().unwrap_or("").to_string(),
        );
        if (p == page || r == "login") && !r.is_empty() {
            return r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "{page}: the page never finished rendering (at {p}: {r})"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Script errors the page recorded (uncaught errors, rejected promises, failed API calls).
pub async fn errors(c: &Client) -> Vec<String> {
    let v = c.execute("return Apus.errors;", vec![]).await.unwrap();
    serde_json::from_value(v).unwrap_or_default()
}

pub async fn text(c: &Client) -> String {
    c.find(Locator::Id("view"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

/// Open a page, wait for it, check it has no error, screenshot it; its text.
pub async fn visit(c: &Client, base: &str, hash: &str, name: &str) -> String {
    c.goto(&format!("{base}/#/{hash}")).await.unwrap();
    // A hash change within the same document does not reload: render runs on hashchange.
    let page = hash.split(['/', '?']).next().unwrap();
    let got = ready(c, page).await;
    let t = text(c).await;
    assert_eq!(got, page, "{name}: {t}");
    let errs = errors(c).await;
    assert!(errs.is_empty(), "{name}: script errors {errs:?}");
    let banners = c.find_all(Locator::Css("#view .err")).await.unwrap();
    let mut shown = Vec::new();
    for b in banners {
        if b.is_displayed().await.unwrap_or(false) {
            shown.push(b.text().await.unwrap_or_default());
        }
    }
    assert!(shown.is_empty(), "{name}: error banners {shown:?}");
    let unlabelled = a11y(c).await;
    assert!(
        unlabelled.is_empty(),
        "{name}: controls without a name {unlabelled:?}"
    );
    let png = c.screenshot().await.unwrap();
    std::fs::write(shots_dir().join(format!("{name}.png")), png).unwrap();
    t
}

/// Accessibility basics of what is on screen: every visible form control has a label (or
/// an ARIA name), every visible button and link has a name, keyboard focus is drawn
/// (`:focus-visible` in the style sheet). Returns the offenders.
pub async fn a11y(c: &Client) -> Vec<String> {
    let js = r#"
const bad = [];
const vis = (e) => !!(e.offsetWidth || e.offsetHeight || e.getClientRects().length);
const named = (e) => (e.getAttribute('aria-label') || e.getAttribute('aria-labelledby') || e.title || '').trim();
for (const e of document.querySelectorAll('input:not([type=hidden]), select, textarea')) {
  if (vis(e) && !(e.labels && e.labels.length) && !named(e)) bad.push(e.outerHTML.slice(0, 160));
}
for (const e of document.querySelectorAll('button, a[href]')) {
  if (vis(e) && !e.textContent.trim() && !named(e)) bad.push(e.outerHTML.slice(0, 160));
}
// Text contrast (WCAG AA: 4.5:1, 3:1 for large text) against the nearest opaque background.
const rgb = (c) => (c.match(/[\d.]+/g) || []).map(Number);
const lum = ([r, g, b]) => [r, g, b].map((v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; })
  .reduce((s, v, i) => s + v * [0.2126, 0.7152, 0.0722][i], 0);
const bgOf = (e) => { for (; e; e = e.parentElement) { const c = rgb(getComputedStyle(e).backgroundColor); if (c.length >= 3 && (c.length < 4 || c[3] > 0.5)) return c; } return [255, 255, 255]; };
for (const e of document.body.querySelectorAll('*')) {
  if (e.closest('svg') || !vis(e) || ![...e.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim())) continue;
  const st = getComputedStyle(e), fg = rgb(st.color), bg = bgOf(e);
  const [a, b] = [lum(fg), lum(bg)].sort((x, y) => y - x), ratio = (a + 0.05) / (b + 0.05);
  const large = parseFloat(st.fontSize) >= 24 || (parseFloat(st.fontSize) >= 18.5 && Number(st.fontWeight) >= 700);
  if (ratio < (large ? 3 : 4.5)) bad.push(`contrast ${ratio.toFixed(2)}: ${st.color} on rgb(${bg}) ${e.outerHTML.slice(0, 100)}`);
}
const focus = [...document.styleSheets].some((s) => [...s.cssRules].some((r) => (r.selectorText || '').includes(':focus-visible')));
if (!focus) bad.push('no :focus-visible style');
return bad;"#;
    let v = c.execute(js, vec![]).await.unwrap();
    serde_json::from_value(v).unwrap_or_default()
}

pub async fn click(c: &Client, css: &str) {
    let start = Instant::now();
    loop {
        match c.find(Locator::Css(css)).await {
            Ok(e) => {
                e.click().await.unwrap();
                return;
            }
            Err(_) if start.elapsed() < Duration::from_secs(10) => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("no `{css}`: {e}"),
        }
    }
}

pub async fn fill(c: &Client, css: &str, value: &str) {
    let e = c.find(Locator::Css(css)).await.unwrap();
    e.clear().await.unwrap();
    e.send_keys(value).await.unwrap();
}

/// Wait until an element matching `css` is displayed with `needle` in its text (an
/// answer the page is still waiting for shows something else first); its text.
pub async fn shown_with(c: &Client, css: &str, needle: &str) -> String {
    let start = Instant::now();
    loop {
        let t = shown(c, css).await;
        if t.contains(needle) || start.elapsed() > Duration::from_secs(10) {
            return t;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Wait until an element matching `css` is displayed; its text.
pub async fn shown(c: &Client, css: &str) -> String {
    let start = Instant::now();
    loop {
        if let Ok(e) = c.find(Locator::Css(css)).await {
            if e.is_displayed().await.unwrap_or(false) {
                return e.text().await.unwrap_or_default();
            }
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "`{css}` never shown"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// A browser session logged in with `token` (through the link form `apus run` prints).
pub async fn session_as(driver: &Driver, base: &str, token: &str, page: &str) -> Client {
    let c = driver.session(1280, 800).await;
    c.goto(&format!("{base}/#/{page}?token={token}"))
        .await
        .unwrap();
    let p = page.split(['/', '?']).next().unwrap();
    assert_eq!(ready(&c, p).await, p);
    c
}

/// Whether anything matches `css` on the page now.
pub async fn any(c: &Client, css: &str) -> bool {
    !c.find_all(Locator::Css(css)).await.unwrap().is_empty()
}

/// Click `css`, give the confirmation dialog a reason, apply.
pub async fn confirm(c: &Client, css: &str, reason: &str) {
    click(c, css).await;
    shown(c, "dialog[open] #reason").await;
    fill(c, "#reason", reason).await;
    click(c, "#dlgok").await;
    let start = Instant::now();
    while any(c, "dialog[open]").await {
        let err = c
            .find(Locator::Id("dlgerr"))
            .await
            .unwrap()
            .text()
            .await
            .unwrap_or_default();
        assert!(
            err.is_empty() && start.elapsed() < Duration::from_secs(10),
            "the dialog stayed open: {err}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
