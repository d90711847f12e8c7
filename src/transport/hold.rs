//! Held commands: a command that keeps running on its own channel while other commands run on
//! the same connection, such as `flock` holding plumb's host lock. It is released by closing its
//! stdin; if plumb dies, the connection drops and sshd ends the command, so a lock can never
//! outlive the run that took it.

use super::{Connection, TransportError};
use russh::ChannelMsg;
use std::time::Duration;
use tokio::time::timeout;

/// A command that printed its ready line and is still running.
pub struct Held {
    writer: russh::ChannelWriteHalf<russh::client::Msg>,
    reader: russh::ChannelReadHalf,
    target: String,
}

impl Connection {
    /// Starts `command` (under `sudo -n` when this connection uses it), sends `stdin` without
    /// closing it, and waits at most `wait` for the command to print `ready` on a line of its
    /// own; then returns it still running, with everything it printed before that line.
    ///
    /// Sending input lets one channel both take plumb's host lock and read the host under it
    /// (`flock ... sh -s` fed the probe script): one command instead of two.
    pub async fn hold(
        &self,
        command: &str,
        stdin: &[u8],
        ready: &str,
        wait: Duration,
    ) -> Result<(Held, Vec<u8>), TransportError> {
        let command = if self.sudo {
            format!("exec sudo -n -- sh -c {}", crate::shell::quote(command))
        } else {
            command.to_string()
        };
        let channel = timeout(wait, self.open_channel()).await.map_err(|_| {
            TransportError::CommandTimeout {
                target: self.target.clone(),
                after: wait,
            }
        })??;
        let (mut reader, writer) = channel.split();
        writer
            .exec(true, command.clone())
            .await
            .map_err(|e| self.session_error(&format!("cannot send the command: {e}")))?;
        let mut stdout = Vec::new();
        let mut stderr = Vec::new();
        let waited = timeout(wait, async {
            // Input goes out while output comes in, so that neither side can stall the other.
            let send = async {
                for chunk in stdin.chunks(super::STDIN_CHUNK) {
                    writer.data_bytes(chunk.to_vec()).await?;
                }
                Ok::<(), russh::Error>(())
            };
            let receive = async {
                // Where the line being received starts: each line is looked at once.
                let mut line_start = 0;
                loop {
                    match reader.wait().await {
                        Some(ChannelMsg::Data { data }) => {
                            stdout.extend_from_slice(&data);
                            while let Some(nl) =
                                stdout[line_start..].iter().position(|b| *b == b'\n')
                            {
                                let line = &stdout[line_start..line_start + nl];
                                line_start += nl + 1;
                                if String::from_utf8_lossy(line).trim() == ready {
                                    stdout.truncate(line_start - nl - 1);
                                    return Ok(());
                                }
                            }
                        }
                        Some(ChannelMsg::ExtendedData { data, .. }) => {
                            stderr.extend_from_slice(&data)
                        }
                        Some(ChannelMsg::ExitStatus { exit_status }) => {
                            return Err(self.session_error(&format!(
                                "`{command}` exited with {exit_status} before it was ready: {}",
                                String::from_utf8_lossy(&stderr).trim()
                            )));
                        }
                        Some(ChannelMsg::Failure) => {
                            return Err(TransportError::ExecRefused {
                                target: self.target.clone(),
                            });
                        }
                        Some(ChannelMsg::Close) | None => {
                            return Err(self.session_error(&format!(
                                "`{command}` ended before it was ready: {}",
                                String::from_utf8_lossy(&stderr).trim()
                            )));
                        }
                        Some(_) => {}
                    }
                }
            };
            tokio::pin!(send, receive);
            let mut sent = None;
            loop {
                tokio::select! {
                    r = &mut send, if sent.is_none() => sent = Some(r),
                    r = &mut receive => {
                        // The ready line comes after the input was read; a send error is
                        // what stopped the command.
                        return match (r, sent) {
                            (Err(e), Some(Err(s))) => Err(self.session_error(&format!(
                                "cannot send input ({s}): {e}"
                            ))),
                            (r, _) => r,
                        };
                    }
                }
            }
        })
        .await;
        match waited {
            Ok(Ok(())) => Ok((
                Held {
                    writer,
                    reader,
                    target: self.target.clone(),
                },
                stdout,
            )),
            Ok(Err(e)) => {
                let _ = timeout(Duration::from_secs(2), writer.close()).await;
                Err(e)
            }
            Err(_) => {
                let _ = timeout(Duration::from_secs(2), writer.close()).await;
                Err(TransportError::CommandTimeout {
                    target: self.target.clone(),
                    after: wait,
                })
            }
        }
    }
}

impl Held {
    /// Ends the command: EOF on its stdin, then waits (bounded) for it to exit.
    pub async fn release(self) {
        let Held {
            writer,
            mut reader,
            target,
        } = self;
        let done = async {
            let _ = writer.eof().await;
            while let Some(msg) = reader.wait().await {
                if matches!(msg, ChannelMsg::Close) {
                    break;
                }
            }
        };
        if timeout(Duration::from_secs(5), done).await.is_err() {
            tracing::debug!(target = %target, "held command did not end within 5s of EOF; closing its channel");
            let _ = timeout(Duration::from_secs(2), writer.close()).await;
        }
    }
}
