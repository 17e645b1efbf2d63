//! The router's side of the control socket: each connection a thread, each line a command.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::{UnixListener, UnixStream};
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

/// Answers the commands of one connection.
fn session(conn: UnixStream, shared: &Shared, stop: &Sender<()>) {
    let Ok(mut out) = conn.try_clone() else {
        return;
    };
    for line in BufReader::new(conn).lines() {
        let Ok(line) = line else { return };
        if line.trim().is_empty() {
            continue;
        }
        let (reply, stopping) = match Command::parse(&line) {
            Ok(cmd) => (answer(shared, &cmd), cmd == Command::Stop),
            Err(e) => (Reply::error(e), false),
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
fn answer(shared: &Shared, cmd: &Command) -> Reply {
    let gate = &shared.gate;
    let mut reply = Reply::ok(shared.status());
    match cmd {
        Command::Hold(drain) => reply.drained = Some(gate.hold(*drain)),
        Command::Switch(endpoint) => gate.switch(endpoint.clone()),
        Command::Release => reply.released = Some(gate.release()),
        Command::Status | Command::Stop => {}
    }
    reply.status = Some(shared.status());
    reply
}
