//! Runs one external command with a deadline: an argv with extra environment
//! variables, stdin from /dev/null, stdout and stderr through one pipe (so their lines
//! stay in order; the last 64 KiB and 20 lines are kept), in its own process group,
//! killed with the whole group at the deadline. Blocking. It knows nothing of servers,
//! hooks or configuration: callers turn its errors into their own, naming the field
//! that chose the command.

use crate::duration::format_duration;
use nix::sys::signal::{killpg, Signal};
use nix::unistd::Pid;
use std::collections::VecDeque;
use std::ffi::OsStr;
use std::fmt;
use std::fs::File;
use std::io::{self, Read};
use std::os::unix::process::CommandExt;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::{mpsc, Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// How many trailing lines of a command's output are reported.
const OUTPUT_LINES: usize = 20;
/// How many trailing bytes of output are kept while a command runs.
const OUTPUT_BYTES: usize = 64 * 1024;
/// After a command exits, how long to wait for the rest of its output. A daemon it
/// started may hold the pipe open for ever; we do not wait for that.
pub const OUTPUT_GRACE: Duration = Duration::from_millis(500);

/// No extra environment.
pub const NO_ENV: &[(&str, &str)] = &[];

/// A command that ran to its end (successfully or not).
#[derive(Debug)]
pub struct Finished {
    pub status: ExitStatus,
    /// The last lines of stdout and stderr together, trimmed; `(no output)` when empty.
    pub output: String,
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("empty command; give the program and its arguments as a list")]
    Empty,
    #[error("cannot start `{program}`: {source}")]
    Spawn {
        program: String,
        #[source]
        source: io::Error,
    },
    #[error("`{command}` did not finish within {} and was killed; output so far:\n{output}", format_duration(*after))]
    TimedOut {
        /// The command as a shell would show it.
        command: String,
        after: Duration,
        /// What it wrote before it was killed.
        output: String,
    },
}

/// A command as a shell would show it, for messages.
pub fn show_command(argv: &[String]) -> String {
    argv.iter()
        .map(|a| {
            if !a.is_empty()
                && a.bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b"-_./=:,+@%".contains(&b))
            {
                a.clone()
            } else {
                format!("'{}'", a.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The last bytes a command wrote (stdout and stderr through one pipe, in order).
#[derive(Default)]
struct Tail(VecDeque<u8>);

impl Tail {
    fn push(&mut self, bytes: &[u8]) {
        self.0.extend(bytes);
        let excess = self.0.len().saturating_sub(OUTPUT_BYTES);
        self.0.drain(..excess);
    }

    /// The last lines, trimmed.
    fn text(&self) -> String {
        let bytes: Vec<u8> = self.0.iter().copied().collect();
        let text = String::from_utf8_lossy(&bytes);
        let lines: Vec<&str> = text.trim().lines().collect();
        let start = lines.len().saturating_sub(OUTPUT_LINES);
        let out = lines[start..].join("\n");
        if out.is_empty() {
            "(no output)".into()
        } else {
            out
        }
    }
}

impl fmt::Debug for Tail {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Tail({} bytes)", self.0.len())
    }
}

/// Runs `argv` with `env` added to certkeeper's own environment and waits for it, at
/// most `timeout`: then the command and everything it started in its process group
/// are killed, and the output so far is returned in the error.
pub fn run<K, V>(argv: &[String], env: &[(K, V)], timeout: Duration) -> Result<Finished, RunError>
where
    K: AsRef<OsStr>,
    V: AsRef<OsStr>,
{
    let Some((program, args)) = argv.split_first() else {
        return Err(RunError::Empty);
    };
    let spawn_err = |source: io::Error| RunError::Spawn {
        program: program.clone(),
        source,
    };
    // One pipe for both streams keeps their lines in order. Close-on-exec, so children
    // started concurrently by other threads do not inherit it.
    let (read_end, write_end) = nix::unistd::pipe2(nix::fcntl::OFlag::O_CLOEXEC)
        .map_err(|e| spawn_err(io::Error::from(e)))?;
    let write_err = write_end.try_clone().map_err(spawn_err)?;
    let mut child = {
        // The Command owns our copies of the write end: it must be dropped right after
        // the spawn, or the reader would never see end-of-file.
        let mut cmd = Command::new(program);
        cmd.args(args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::from(write_end))
            .stderr(Stdio::from(write_err))
            .process_group(0);
        cmd.spawn().map_err(spawn_err)?
    };
    let tail = Arc::new(Mutex::new(Tail::default()));
    let (eof_tx, eof_rx) = mpsc::channel::<()>();
    {
        let tail = Arc::clone(&tail);
        let mut reader = File::from(read_end);
        thread::spawn(move || {
            let mut buf = [0u8; 8192];
            while let Ok(n) = reader.read(&mut buf) {
                if n == 0 {
                    break;
                }
                tail.lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .push(&buf[..n]);
            }
            let _ = eof_tx.send(());
        });
    }
    // Told the moment the command exits: a config test that takes 7 ms is seen to end
    // then, not at the next of a series of growing pauses. Waited for without reaping
    // it, so that its pid (its process group's id too) stays its own until we reap it.
    let (exit_tx, exited) = mpsc::channel::<()>();
    {
        let pid = Pid::from_raw(child.id() as i32);
        thread::spawn(move || {
            use nix::sys::wait::{waitid, Id, WaitPidFlag};
            let flags = WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT;
            while let Err(nix::errno::Errno::EINTR) = waitid(Id::Pid(pid), flags) {}
            let _ = exit_tx.send(());
        });
    }
    let output = |tail: &Arc<Mutex<Tail>>| tail.lock().unwrap_or_else(|e| e.into_inner()).text();
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(1);
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) => {}
            Err(source) => {
                let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
                let _ = child.wait();
                return Err(spawn_err(source));
            }
        }
        let now = Instant::now();
        if now >= deadline {
            // The group id is the child's pid, which cannot be reused before we reap it.
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            let _ = eof_rx.recv_timeout(OUTPUT_GRACE);
            return Err(RunError::TimedOut {
                command: show_command(argv),
                after: timeout,
                output: output(&tail),
            });
        }
        // Until the command exits or the pause ends; the pause alone if the waiter
        // has gone (it only goes once the command has exited).
        if let Err(mpsc::RecvTimeoutError::Disconnected) =
            exited.recv_timeout(pause.min(deadline - now))
        {
            thread::sleep(pause.min(deadline - now));
        }
        pause = (pause * 2).min(Duration::from_millis(25));
    };
    let _ = eof_rx.recv_timeout(OUTPUT_GRACE);
    Ok(Finished {
        status,
        output: output(&tail),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::signal::kill;

    fn argv(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    /// Whether a process is gone (or only a zombie nobody has collected yet).
    fn gone(pid: i32) -> bool {
        if kill(Pid::from_raw(pid), None).is_err() {
            return true;
        }
        std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .ok()
            .and_then(|s| {
                let after = &s[s.rfind(')')? + 1..];
                after.split_whitespace().next().map(|st| st == "Z")
            })
            .unwrap_or(true)
    }

    #[test]
    fn passes_the_environment_and_keeps_certkeepers_own() {
        let done = run(
            &argv(&["sh", "-c", "echo \"$CK_A|$CK_B|${PATH:+path}\""]),
            &[("CK_A", "one two"), ("CK_B", "")],
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(done.status.success());
        assert_eq!(done.output, "one two||path");
    }

    #[test]
    fn keeps_the_order_of_stdout_and_stderr() {
        let script = "for i in 1 2 3 4 5 6; do \
                      if [ $((i % 2)) = 0 ]; then echo err$i >&2; else echo out$i; fi; done; exit 4";
        let done = run(
            &argv(&["sh", "-c", script]),
            NO_ENV,
            Duration::from_secs(10),
        )
        .unwrap();
        assert_eq!(done.status.code(), Some(4));
        assert_eq!(done.output, "out1\nerr2\nout3\nerr4\nout5\nerr6");
    }

    #[test]
    fn keeps_only_the_last_lines_and_bytes() {
        let done = run(
            &argv(&["sh", "-c", "seq 1 100"]),
            NO_ENV,
            Duration::from_secs(10),
        )
        .unwrap();
        let want: Vec<String> = (81..=100).map(|i| i.to_string()).collect();
        assert_eq!(done.output, want.join("\n"));
        let mut tail = Tail::default();
        tail.push(&vec![b'a'; OUTPUT_BYTES + 10]);
        tail.push(b"\nlast");
        assert_eq!(tail.0.len(), OUTPUT_BYTES);
        assert!(tail.text().ends_with("\nlast"));
        assert_eq!(Tail::default().text(), "(no output)");
    }

    #[test]
    fn stdin_is_dev_null() {
        // A command reading stdin must see end-of-file, never wait on our terminal.
        let done = run(
            &argv(&["sh", "-c", "readlink /proc/$$/fd/0; cat"]),
            NO_ENV,
            Duration::from_secs(10),
        )
        .unwrap();
        assert!(done.status.success());
        assert_eq!(done.output, "/dev/null");
    }

    #[test]
    fn kills_a_hanging_command_and_its_children_at_the_deadline() {
        let dir = tempfile::tempdir().unwrap();
        let marker = dir.path().join("grandchild.pid");
        let script = format!(
            "sleep 600 & echo $! > {}; echo started; echo on-stderr >&2; wait",
            marker.display()
        );
        let started = Instant::now();
        let err = run(
            &argv(&["sh", "-c", &script]),
            NO_ENV,
            Duration::from_millis(300),
        )
        .unwrap_err();
        let took = started.elapsed();
        assert!(took >= Duration::from_millis(300), "{took:?}");
        assert!(took < Duration::from_secs(5), "{took:?}");
        match &err {
            RunError::TimedOut {
                command,
                after,
                output,
            } => {
                assert!(command.starts_with("sh -c 'sleep 600 &"), "{command}");
                assert_eq!(*after, Duration::from_millis(300));
                assert_eq!(output, "started\non-stderr");
            }
            other => panic!("expected TimedOut, got {other:?}"),
        }
        // The grandchild went with the process group.
        let pid: i32 = std::fs::read_to_string(&marker)
            .unwrap()
            .trim()
            .parse()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        while !gone(pid) {
            assert!(Instant::now() < deadline, "grandchild {pid} still runs");
            thread::sleep(Duration::from_millis(5));
        }
    }

    #[test]
    fn empty_and_missing_commands_are_typed_errors() {
        assert!(matches!(
            run(&[], NO_ENV, Duration::from_secs(1)),
            Err(RunError::Empty)
        ));
        match run(
            &argv(&["/nonexistent/prog", "x"]),
            NO_ENV,
            Duration::from_secs(1),
        ) {
            Err(RunError::Spawn { program, source }) => {
                assert_eq!(program, "/nonexistent/prog");
                assert_eq!(source.kind(), io::ErrorKind::NotFound);
            }
            other => panic!("expected Spawn, got {other:?}"),
        }
    }

    #[test]
    fn shows_commands_as_a_shell_would() {
        assert_eq!(
            show_command(&argv(&["nginx", "-t", "-c", "/etc/nginx/x.conf"])),
            "nginx -t -c /etc/nginx/x.conf"
        );
        assert_eq!(
            show_command(&argv(&["sh", "-c", "echo it's", ""])),
            r"sh -c 'echo it'\''s' ''"
        );
    }
}
