//! systemd notification (`$NOTIFY_SOCKET`): READY, RELOADING, STOPPING, STATUS and
//! the watchdog.

use sd_notify::NotifyState;

/// Tells systemd (`$NOTIFY_SOCKET`) about state changes. Never blocks: a service manager
/// that does not read its socket (a full queue) costs a dropped status line, not a
/// daemon stuck in `send` while certificates come due.
/// A status line alone that says what the last one said is not sent again (the loop
/// wakes for timers and file events far more often than its status changes).
pub(super) fn notify(states: &[NotifyState]) {
    static LAST_STATUS: std::sync::Mutex<String> = std::sync::Mutex::new(String::new());
    {
        let mut last = LAST_STATUS.lock().unwrap_or_else(|p| p.into_inner());
        let status = states.iter().find_map(|s| match s {
            NotifyState::Status(text) => Some(*text),
            _ => None,
        });
        if let Some(text) = status {
            if states.len() == 1 && *last == text {
                return;
            }
            text.clone_into(&mut last);
        }
    }
    if let Err(e) = notify_nonblocking(states) {
        tracing::debug!(error = %e, "sd_notify failed");
    }
}

fn notify_nonblocking(states: &[NotifyState]) -> std::io::Result<()> {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::{SocketAddr, UnixDatagram};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else {
        return Ok(());
    };
    let msg: String = states.iter().map(|s| format!("{s}\n")).collect();
    let sock = UnixDatagram::unbound()?;
    sock.set_nonblocking(true)?;
    let bytes = std::os::unix::ffi::OsStrExt::as_bytes(path.as_os_str());
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name)?,
        None => SocketAddr::from_pathname(&path)?,
    };
    sock.send_to_addr(msg.as_bytes(), &addr).map(|_| ())
}
