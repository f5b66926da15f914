//! A webhook receiver for alarm tests: a real HTTP server on a loopback port that keeps
//! every request body it is sent (with its arrival time) and answers 200, or the status
//! set for the path with [`Hook::answer`].

use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::sync::{Arc, Mutex};
use std::time::Instant;

/// One received request.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub body: String,
    pub at: Instant,
}

/// The receiver; it stops serving when dropped (its thread ends with the test process).
pub struct Hook {
    pub port: u16,
    got: Arc<Mutex<Vec<Received>>>,
    statuses: Arc<Mutex<std::collections::HashMap<String, u16>>>,
}

impl Hook {
    /// Listen on a free loopback port.
    pub fn start() -> Hook {
        let l = TcpListener::bind("127.0.0.1:0").expect("bind hook");
        let port = l.local_addr().expect("hook addr").port();
        let got = Arc::new(Mutex::new(Vec::new()));
        let statuses: Arc<Mutex<std::collections::HashMap<String, u16>>> = Arc::default();
        let (g, st) = (got.clone(), statuses.clone());
        std::thread::spawn(move || {
            for s in l.incoming() {
                let Ok(mut s) = s else { continue };
                let (g, st) = (g.clone(), st.clone());
                std::thread::spawn(move || {
                    let mut r = BufReader::new(s.try_clone().expect("clone stream"));
                    loop {
                        let mut line = String::new();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
                        let mut len = 0usize;
                        loop {
                            let mut h = String::new();
                            if r.read_line(&mut h).unwrap_or(0) == 0 {
                                return;
                            }
                            let h = h.trim_end();
                            if h.is_empty() {
                                break;
                            }
                            if let Some((k, v)) = h.split_once(':') {
                                if k.eq_ignore_ascii_case("content-length") {
                                    len = v.trim().parse().unwrap_or(0);
                                }
                            }
                        }
                        let mut body = vec![0u8; len.min(16 << 20)];
                        if r.read_exact(&mut body).is_err() {
                            return;
                        }
                        let code = st.lock().unwrap().get(&path).copied().unwrap_or(200);
                        g.lock().unwrap().push(Received {
                            path,
                            body: String::from_utf8_lossy(&body).into_owned(),
                            at: Instant::now(),
                        });
                        let answer = if code == 200 { "" } else { "not now" };
                        let _ = s.write_all(
                            format!(
                                "HTTP/1.1 {code} X\r\ncontent-length: {}\r\n\r\n{answer}",
                                answer.len()
                            )
                            .as_bytes(),
                        );
                    }
                });
            }
        });
        Hook {
            port,
            got,
            statuses,
        }
    }

    /// Answer requests to `path` with `status` from now on.
    pub fn answer(&self, path: &str, status: u16) {
        self.statuses
            .lock()
            .unwrap()
            .insert(path.to_string(), status);
    }

    /// `http://127.0.0.1:PORT{path}`.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.got.lock().unwrap().clone()
    }
}
