//! The router's side of the control socket: each connection a thread, each line a command.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::Sender;
use std::sync::Arc;

use super::protocol::{Command, Reply};
use super::Shared;

/// Accepts control connections until the process ends; `stop` is signalled on `stop`.
pub fn serve(listener: UnixListener, shared: Arc<Shared>, stop: Sender<()>) {
    for conn in listener.incoming() {
        let Ok(conn) = conn else { continue };
        let shared = Arc::clone(&shared);
        let stop = stop.clone();
        std::thread::spawn(move || session(conn, &shared, &stop));
    }
}

/// Numbers control connections, for leases.
static SESSIONS: AtomicU64 = AtomicU64::new(1);

/// Answers the commands of one connection; when it ends, a hold it leased is released.
fn session(conn: UnixStream, shared: &Shared, stop: &Sender<()>) {
    let id = SESSIONS.fetch_add(1, Ordering::Relaxed);
    commands(conn, id, shared, stop);
    if shared.gate.end_lease(id) {
        tracing::warn!("control connection {id} closed while holding requests: released them");
    }
}

/// Answers the commands of connection `id` until it closes.
fn commands(conn: UnixStream, id: u64, shared: &Shared, stop: &Sender<()>) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let (reply, stopping) = match Command::parse(&line) {
            Ok(cmd) => (answer(shared, id, &cmd), cmd == Command::Stop),
            Err(e) => (Reply::error(e.to_string()), false),
        };
        let mut text = serde_json::to_vec(&reply).unwrap_or_else(|e| {
            format!("{{\"ok\":false,\"error\":\"serialising reply: {e}\"}}").into_bytes()
        });
        text.push(b'\n');
        let sent = out.write_all(&text).and_then(|()| out.flush());
        if stopping {
            // The router ends after the reply is out; a closed channel means it already is.
            let _ = stop.send(());
            return;
        }
        if sent.is_err() {
            return;
        }
    }
}

/// Does what a command says and builds the reply.
fn answer(shared: &Shared, session: u64, cmd: &Command) -> Reply {
    let gate = &shared.gate;
    let mut reply = Reply::ok(shared.status());
    match cmd {
        Command::Hold(drain) => reply.drained = Some(gate.hold(*drain)),
        Command::Switch(endpoint) => gate.switch(endpoint.clone()),
        Command::Release => reply.released = Some(gate.release()),
        Command::Lease => gate.lease(session),
        Command::Status | Command::Stop => {}
    }
    reply.status = Some(shared.status());
    reply
}
