//! A webhook receiver for export scenarios: a real HTTP/1.1 server on loopback that
//! answers 200 to every `POST` and records each request's `Idempotency-Key` header and JSON
//! body. It can be stopped (listener closed, open connections cut) and started again on the
//! same port, as a SIEM collector restarting would.

use std::collections::BTreeMap;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use serde_json::Value;

/// One request the receiver accepted.
#[derive(Clone, Debug)]
pub struct Received {
    /// The `Idempotency-Key` header.
    pub key: String,
    pub body: Value,
}

pub struct WebhookReceiver {
    addr: SocketAddr,
    received: Arc<Mutex<Vec<Received>>>,
    stop: Arc<AtomicBool>,
    connections: Arc<Mutex<Vec<TcpStream>>>,
    acceptor: Option<JoinHandle<()>>,
}

impl WebhookReceiver {
    /// Listens on `addr` (`127.0.0.1:0` for a fresh port), keeping what arrives in
    /// `received` (shared across restarts).
    pub fn start(addr: SocketAddr, received: Arc<Mutex<Vec<Received>>>) -> WebhookReceiver {
        let listener = TcpListener::bind(addr)
            .unwrap_or_else(|err| panic!("webhook receiver bind {addr}: {err}"));
        let addr = listener.local_addr().expect("receiver address");
        listener
            .set_nonblocking(true)
            .expect("nonblocking listener");
        let stop = Arc::new(AtomicBool::new(false));
        let connections: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let acceptor = {
            let (stop, connections, received) =
                (stop.clone(), connections.clone(), received.clone());
            thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let _ = stream.set_nonblocking(false);
                            if let Ok(clone) = stream.try_clone() {
                                connections.lock().expect("connections").push(clone);
                            }
                            let received = received.clone();
                            thread::spawn(move || serve(stream, &received));
                        }
                        Err(err) if err.kind() == io::ErrorKind::WouldBlock => {
                            thread::sleep(Duration::from_millis(10));
                        }
                        Err(err) => panic!("webhook receiver accept: {err}"),
                    }
                }
                // The listener closes here: new connections are refused.
            })
        };
        WebhookReceiver {
            addr,
            received,
            stop,
            connections,
            acceptor: Some(acceptor),
        }
    }

    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn url(&self) -> String {
        format!("http://{}/rasp/detections", self.addr)
    }

    /// Close the listener and cut every open connection; returns the address to start on
    /// again.
    pub fn stop(mut self) -> SocketAddr {
        self.shutdown();
        self.addr
    }

    fn shutdown(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
        for conn in self.connections.lock().expect("connections").drain(..) {
            let _ = conn.shutdown(Shutdown::Both);
        }
    }

    /// Everything received so far (this and earlier incarnations sharing the list).
    pub fn received(&self) -> Vec<Received> {
        self.received.lock().expect("received").clone()
    }
}

impl Drop for WebhookReceiver {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// How many times each key arrived.
pub fn count_by_key(received: &[Received]) -> BTreeMap<String, usize> {
    let mut counts = BTreeMap::new();
    for r in received {
        *counts.entry(r.key.clone()).or_insert(0) += 1;
    }
    counts
}

/// Serve requests on one connection until the client closes it (or it is cut).
fn serve(stream: TcpStream, received: &Mutex<Vec<Received>>) {
    let Ok(write_half) = stream.try_clone() else {
        return;
    };
    let mut writer = write_half;
    let mut reader = BufReader::new(stream);
    loop {
        let mut request_line = String::new();
        match reader.read_line(&mut request_line) {
            Ok(0) | Err(_) => return,
            Ok(_) => {}
        }
        let mut key = String::new();
        let mut length = 0usize;
        loop {
            let mut line = String::new();
            match reader.read_line(&mut line) {
                Ok(0) | Err(_) => return,
                Ok(_) => {}
            }
            let line = line.trim_end();
            if line.is_empty() {
                break;
            }
            if let Some((name, value)) = line.split_once(':') {
                let value = value.trim();
                if name.eq_ignore_ascii_case("content-length") {
                    length = value.parse().unwrap_or(0);
                } else if name.eq_ignore_ascii_case("idempotency-key") {
                    key = value.to_string();
                }
            }
        }
        let mut body = vec![0u8; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let ok = request_line.starts_with("POST ");
        let parsed = serde_json::from_slice::<Value>(&body);
        let answer: &[u8] = match parsed {
            Ok(body) if ok && !key.is_empty() => {
                received
                    .lock()
                    .expect("received")
                    .push(Received { key, body });
                b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\n\r\n"
            }
            _ => b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\n\r\n",
        };
        if writer.write_all(answer).is_err() {
            return;
        }
    }
}
