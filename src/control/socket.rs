//! The control socket: a Unix socket served by `gaittune run`, owner-only, where
//! `gaittune ctl` (or any program) sends operator commands.
//!
//! The protocol is JSON lines: the client writes one [`Command`] object per line, the daemon
//! answers each with one [`Reply`] object on a line. Every connection has a thread of its
//! own, so a `stop` is never queued behind another client's `release` or `enqueue`; `stop`
//! writes EStop to the wire from that thread, as a signal does.
//!
//! The default path is `$XDG_RUNTIME_DIR/gaittune/STUDY.sock` (else
//! `/tmp/gaittune-UID/STUDY.sock`), the directory owner-only (0700), the socket 0600.

use std::io::{self, BufRead, BufReader, Write};
use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::thread::JoinHandle;

use super::commands::{Command, Operator, Reply};

/// The directory holding this user's control sockets.
pub fn runtime_dir() -> PathBuf {
    match std::env::var_os("XDG_RUNTIME_DIR").filter(|d| !d.is_empty()) {
        Some(dir) => PathBuf::from(dir).join("gaittune"),
        None => PathBuf::from(format!("/tmp/gaittune-{}", nix::unistd::getuid())),
    }
}

/// The default control socket of a study (`worker`: one of `--workers N`).
pub fn default_path(study: &str, worker: Option<u32>) -> PathBuf {
    let safe: String = study
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "-_.".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let name = match worker {
        Some(i) => format!("{safe}.w{i}.sock"),
        None => format!("{safe}.sock"),
    };
    runtime_dir().join(name)
}

/// A control socket being served; removed when dropped.
pub struct ControlSocket {
    path: PathBuf,
    closing: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl ControlSocket {
    /// Binds `path` (creating an owner-only directory for it when it is the default one) and
    /// serves `operator` on it from a thread of its own. A socket file left by a daemon that
    /// died is replaced; one that a live daemon serves is an error.
    pub fn serve(path: &Path, operator: Operator) -> io::Result<ControlSocket> {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            if !dir.exists() {
                std::fs::DirBuilder::new()
                    .recursive(true)
                    .mode(0o700)
                    .create(dir)?;
            }
        }
        if path.exists() {
            if UnixStream::connect(path).is_ok() {
                return Err(io::Error::new(
                    io::ErrorKind::AddrInUse,
                    format!(
                        "another gaittune run serves the control socket {} (the same study?); stop it, or give this run its own with --control PATH",
                        path.display()
                    ),
                ));
            }
            std::fs::remove_file(path)?;
        }
        let listener = UnixListener::bind(path)?;
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600))?;
        let closing = Arc::new(AtomicBool::new(false));
        let thread = {
            let closing = closing.clone();
            std::thread::Builder::new()
                .name("control-socket".into())
                .spawn(move || accept_loop(listener, operator, &closing))?
        };
        Ok(ControlSocket {
            path: path.to_path_buf(),
            closing,
            thread: Some(thread),
        })
    }

    /// Where the socket is.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ControlSocket {
    /// Stops accepting and tells the clients' threads to hang up; each notices within
    /// `CLOSING_POLL`, so nothing here or in the study they hold waits for a client.
    fn drop(&mut self) {
        self.closing.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        let _ = std::fs::remove_file(&self.path);
    }
}

/// How often the accept loop and an idle client's thread look at the closing flag.
const CLOSING_POLL: std::time::Duration = std::time::Duration::from_millis(200);

fn accept_loop(listener: UnixListener, operator: Operator, closing: &Arc<AtomicBool>) {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use std::os::fd::AsFd;
    if let Err(e) = listener.set_nonblocking(true) {
        tracing::warn!("control socket: {e}; no operator commands this run");
        return;
    }
    let tick = PollTimeout::from(CLOSING_POLL.as_millis() as u16);
    while !closing.load(Ordering::SeqCst) {
        let mut fds = [PollFd::new(listener.as_fd(), PollFlags::POLLIN)];
        if !matches!(poll(&mut fds, tick), Ok(n) if n > 0) {
            continue;
        }
        let Ok((stream, _)) = listener.accept() else {
            continue;
        };
        let operator = operator.clone();
        let closing = closing.clone();
        let _ = std::thread::Builder::new()
            .name("control-client".into())
            .spawn(move || {
                if let Err(e) = serve_client(stream, &operator, &closing) {
                    tracing::debug!("control client: {e}");
                }
            });
    }
}

/// Who is on the other end, as recorded with what they did.
fn peer_name(stream: &UnixStream) -> String {
    use nix::sys::socket::{getsockopt, sockopt::PeerCredentials};
    match getsockopt(stream, PeerCredentials) {
        Ok(cred) => format!("ctl (uid {}, pid {})", cred.uid(), cred.pid()),
        Err(_) => "ctl".into(),
    }
}

fn serve_client(stream: UnixStream, operator: &Operator, closing: &AtomicBool) -> io::Result<()> {
    let by = peer_name(&stream);
    stream.set_nonblocking(false)?;
    stream.set_read_timeout(Some(CLOSING_POLL))?;
    // A client that never reads its answers must not hold this thread (and the study).
    stream.set_write_timeout(Some(std::time::Duration::from_secs(5)))?;
    let mut writer = stream.try_clone()?;
    let mut reader = BufReader::new(stream);
    let mut bytes = Vec::new();
    loop {
        // read_until keeps what it read before a timeout: a line may arrive in pieces.
        let last = match reader.read_until(b'\n', &mut bytes) {
            Ok(0) => return Ok(()),
            // Without its newline: the client's last line before it hung up.
            Ok(_) => !bytes.ends_with(b"\n"),
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                if closing.load(Ordering::SeqCst) {
                    return Ok(());
                }
                continue;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        let line = String::from_utf8_lossy(&bytes).into_owned();
        bytes.clear();
        if line.trim().is_empty() {
            continue;
        }
        let reply = match serde_json::from_str::<Command>(&line) {
            Ok(command) => operator.execute(command, &by),
            Err(e) => Reply {
                ok: false,
                message: format!(
                    "not a command ({e}); send one JSON object per line, e.g. {{\"cmd\":\"status\"}}"
                ),
                status: serde_json::Value::Null,
            },
        };
        let mut text = serde_json::to_string(&reply).map_err(io::Error::other)?;
        text.push('\n');
        writer.write_all(text.as_bytes())?;
        if last {
            return Ok(());
        }
    }
}

/// The longest `gaittune ctl` waits for an answer (a `release` is answered within 5 s, a
/// `fail` or `enqueue` once the study's storage has written it).
pub const ANSWER_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(30);

/// Sends one command to the daemon at `path` and returns its answer, waiting at most
/// [`ANSWER_TIMEOUT`].
pub fn send(path: &Path, command: &Command) -> io::Result<Reply> {
    send_within(path, command, ANSWER_TIMEOUT)
}

/// [`send`], waiting at most `limit` for the answer (an error of kind `WouldBlock` or
/// `TimedOut` after it).
pub fn send_within(
    path: &Path,
    command: &Command,
    limit: std::time::Duration,
) -> io::Result<Reply> {
    let mut stream = UnixStream::connect(path)?;
    stream.set_read_timeout(Some(limit))?;
    stream.set_write_timeout(Some(limit))?;
    let mut line = serde_json::to_string(command).map_err(io::Error::other)?;
    line.push('\n');
    stream.write_all(line.as_bytes())?;
    stream.shutdown(std::net::Shutdown::Write)?;
    let mut answer = String::new();
    BufReader::new(stream).read_line(&mut answer)?;
    if answer.trim().is_empty() {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the daemon closed the control socket without answering",
        ));
    }
    serde_json::from_str(&answer).map_err(io::Error::other)
}

/// The control sockets in [`runtime_dir`] that a live daemon answers on.
pub fn live_sockets() -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(runtime_dir()) else {
        return Vec::new();
    };
    let mut found: Vec<PathBuf> = entries
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "sock"))
        .filter(|p| UnixStream::connect(p).is_ok())
        .collect();
    found.sort();
    found
}

/// Removes the socket files in [`runtime_dir`] that no daemon serves any more (left by a
/// daemon that was killed).
pub fn remove_dead_sockets() {
    let Ok(entries) = std::fs::read_dir(runtime_dir()) else {
        return;
    };
    for path in entries.filter_map(|e| e.ok().map(|e| e.path())) {
        if path.extension().is_some_and(|x| x == "sock") {
            if let Err(e) = UnixStream::connect(&path) {
                if e.kind() == io::ErrorKind::ConnectionRefused {
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
    }
}

/// The socket `gaittune ctl` talks to: the one given, else the only live one in
/// [`runtime_dir`]; an error says what to do when there is none or several.
pub fn choose(given: Option<&Path>) -> Result<PathBuf, String> {
    if let Some(path) = given {
        return Ok(path.to_path_buf());
    }
    let live = live_sockets();
    match live.as_slice() {
        [one] => Ok(one.clone()),
        [] => Err(format!(
            "no gaittune run serves a control socket in {}; start one (`gaittune run CONFIG`), or give the socket's path with --control PATH",
            runtime_dir().display()
        )),
        many => Err(format!(
            "several gaittune runs serve control sockets; choose one with --control PATH:\n  {}",
            many.iter()
                .map(|p| p.display().to_string())
                .collect::<Vec<_>>()
                .join("\n  ")
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::control::commands::StudyActions;
    use crate::control::desk::Desk;
    use serde_json::{json, Map, Value};
    use std::os::unix::fs::MetadataExt;

    struct Nothing;
    impl StudyActions for Nothing {
        fn fail(&self, _: u64, _: bool, _: Option<&str>, _: &str) -> Result<String, String> {
            Err("no study".into())
        }
        fn enqueue(&self, _: &Map<String, Value>, by: &str) -> Result<String, String> {
            Ok(format!("enqueued by {by}"))
        }
        fn trials(&self) -> Result<Value, String> {
            Ok(json!([]))
        }
    }

    #[test]
    fn a_client_gets_answers_and_the_socket_is_owner_only() {
        let dir = std::env::temp_dir().join(format!("gaittune-socket-test-{}", std::process::id()));
        let path = dir.join("study.sock");
        let desk = Desk::new();
        let served =
            ControlSocket::serve(&path, Operator::new(desk.clone(), Arc::new(Nothing))).unwrap();
        assert_eq!(std::fs::metadata(&path).unwrap().mode() & 0o777, 0o600);
        desk.report(json!({"study": "s"}));
        let reply = send(&path, &Command::Status).unwrap();
        assert!(reply.ok);
        assert_eq!(reply.status["study"], "s");
        let reply = send(&path, &Command::Enqueue { params: Map::new() }).unwrap();
        assert!(
            reply.message.starts_with("enqueued by ctl (uid "),
            "{}",
            reply.message
        );
        // A second daemon cannot take a live socket.
        let again = ControlSocket::serve(&path, Operator::new(desk, Arc::new(Nothing)));
        assert!(again.err().unwrap().to_string().contains("--control"));
        // Garbage is answered, not fatal.
        let mut raw = UnixStream::connect(&path).unwrap();
        raw.write_all(b"{\"cmd\":\"fly\"}\n").unwrap();
        raw.shutdown(std::net::Shutdown::Write).unwrap();
        let mut answer = String::new();
        BufReader::new(raw).read_line(&mut answer).unwrap();
        assert!(answer.contains("not a command"), "{answer}");
        drop(served);
        assert!(!path.exists(), "the socket is removed at the end");
        // A daemon that never answers: the client gives up in bounded time.
        let silent = UnixListener::bind(&path).unwrap();
        let err = send_within(
            &path,
            &Command::Status,
            std::time::Duration::from_millis(100),
        )
        .unwrap_err();
        assert!(
            matches!(
                err.kind(),
                io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
            ),
            "{err}"
        );
        drop(silent);
        let _ = std::fs::remove_file(&path);
        let _ = std::fs::remove_dir_all(&dir);
    }
}
