//! Held commands: a command that keeps running on its own channel while plumb talks to it in
//! turns, such as a shell holding plumb's host lock (`flock ... sh -s`). plumb sends a script,
//! reads its output up to an end marker, sends the next one; the last script ends the shell
//! ([`Held::finish`]), or closing stdin does ([`Held::release`]). The lock is held by the
//! process that does the work, so it is released only when that work has ended; the apply
//! script's watchdog ends the work when the session goes away.

use super::{Connection, TransportError};
use russh::ChannelMsg;
use std::time::Duration;
use tokio::time::timeout;

/// A command that printed its ready line and is still running.
pub struct Held {
    writer: russh::ChannelWriteHalf<russh::client::Msg>,
    reader: russh::ChannelReadHalf,
    target: String,
    /// Where a Data packet's bytes after an end marker go (nothing is expected there).
    max_output: usize,
}

/// What a held command printed in one turn, or until it ended.
#[derive(Debug, Default)]
pub struct HeldOutput {
    /// stdout (up to the end marker, which is not included).
    pub stdout: Vec<u8>,
    /// stderr of the turn.
    pub stderr: Vec<u8>,
    /// Exit status, when the command ended.
    pub status: Option<u32>,
}

/// Reads the channel until a line equal to `marker` (Ok(true)), or until the command ended
/// (Ok(false), with its status in `out`).
async fn read_turn(
    reader: &mut russh::ChannelReadHalf,
    marker: Option<&str>,
    out: &mut HeldOutput,
    max_output: usize,
    target: &str,
) -> Result<bool, TransportError> {
    // Where the line being received starts: each line is looked at once.
    let mut line_start = 0;
    loop {
        match reader.wait().await {
            Some(ChannelMsg::Data { data }) => {
                if out.stdout.len().saturating_add(data.len()) > max_output {
                    return Err(TransportError::OutputTooLarge {
                        target: target.to_string(),
                        stream: "stdout",
                        limit: max_output,
                    });
                }
                out.stdout.extend_from_slice(&data);
                let Some(marker) = marker else { continue };
                while let Some(nl) = out.stdout[line_start..].iter().position(|b| *b == b'\n') {
                    let line = &out.stdout[line_start..line_start + nl];
                    let end = line_start + nl + 1;
                    if line == marker.as_bytes() {
                        out.stdout.truncate(line_start);
                        return Ok(true);
                    }
                    line_start = end;
                }
            }
            Some(ChannelMsg::ExtendedData { data, .. }) => {
                if out.stderr.len() < max_output {
                    out.stderr.extend_from_slice(&data);
                }
            }
            Some(ChannelMsg::ExitStatus { exit_status }) => out.status = Some(exit_status),
            Some(ChannelMsg::ExitSignal { .. }) => out.status = Some(255),
            Some(ChannelMsg::Failure) => {
                return Err(TransportError::ExecRefused {
                    target: target.to_string(),
                });
            }
            Some(ChannelMsg::Close) | None => return Ok(false),
            Some(_) => {}
        }
    }
}

/// Sends `stdin` while reading a turn, so that neither side can stall the other.
async fn send_and_read(
    writer: &russh::ChannelWriteHalf<russh::client::Msg>,
    reader: &mut russh::ChannelReadHalf,
    stdin: &[u8],
    marker: Option<&str>,
    out: &mut HeldOutput,
    max_output: usize,
    target: &str,
) -> Result<bool, TransportError> {
    let send = async {
        for chunk in stdin.chunks(super::STDIN_CHUNK) {
            writer.data_bytes(chunk.to_vec()).await?;
        }
        Ok::<(), russh::Error>(())
    };
    let receive = read_turn(reader, marker, out, max_output, target);
    tokio::pin!(send, receive);
    let mut sent = None;
    loop {
        tokio::select! {
            r = &mut send, if sent.is_none() => sent = Some(r),
            r = &mut receive => {
                // The marker comes after the input was read; a send error is what stopped the
                // command.
                return match (r, sent) {
                    (Err(e), Some(Err(s))) => Err(TransportError::Session {
                        target: target.to_string(),
                        reason: format!("cannot send input ({s}): {e}"),
                    }),
                    (r, _) => r,
                };
            }
        }
    }
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
        let mut out = HeldOutput::default();
        let waited = timeout(
            wait,
            send_and_read(
                &writer,
                &mut reader,
                stdin,
                Some(ready),
                &mut out,
                self.max_output,
                &self.target,
            ),
        )
        .await;
        match waited {
            Ok(Ok(true)) => Ok((
                Held {
                    writer,
                    reader,
                    target: self.target.clone(),
                    max_output: self.max_output,
                },
                out.stdout,
            )),
            Ok(Ok(false)) => {
                let stderr = String::from_utf8_lossy(&out.stderr);
                Err(self.session_error(&format!(
                    "`{command}` {} before it was ready: {}",
                    match out.status {
                        Some(s) => format!("exited with {s}"),
                        None => "ended".into(),
                    },
                    crate::secrets::redact(stderr.trim())
                )))
            }
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
    /// Sends `script` to the held shell followed by a line that prints `marker`, and returns
    /// what it printed up to that line, within `limit`. The shell stays held.
    pub async fn exchange(
        &mut self,
        script: &[u8],
        marker: &str,
        limit: Duration,
    ) -> Result<HeldOutput, TransportError> {
        let mut input = Vec::with_capacity(script.len() + marker.len() + 24);
        input.extend_from_slice(script);
        input.extend_from_slice(format!("\nprintf '%s\\n' {marker}\n").as_bytes());
        let mut out = HeldOutput::default();
        let turn = send_and_read(
            &self.writer,
            &mut self.reader,
            &input,
            Some(marker),
            &mut out,
            self.max_output,
            &self.target,
        );
        match timeout(limit, turn).await {
            Ok(Ok(true)) => Ok(out),
            Ok(Ok(false)) => Err(TransportError::Session {
                target: self.target.clone(),
                reason: "the held shell ended in the middle of a turn".into(),
            }),
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TransportError::CommandTimeout {
                target: self.target.clone(),
                after: limit,
            }),
        }
    }

    /// Sends the last `script` (which ends the shell) WITHOUT closing stdin, and waits for the
    /// command to end, within `limit`: stdin stays open while the script works, because its
    /// end is what tells the script's watchdog that plumb went away.
    pub async fn finish(
        mut self,
        script: &[u8],
        limit: Duration,
    ) -> Result<HeldOutput, TransportError> {
        let mut out = HeldOutput::default();
        let turn = send_and_read(
            &self.writer,
            &mut self.reader,
            script,
            None,
            &mut out,
            self.max_output,
            &self.target,
        );
        let result = timeout(limit, turn).await;
        let _ = timeout(Duration::from_secs(2), self.writer.close()).await;
        match result {
            Ok(Ok(_)) => match out.status {
                Some(_) => Ok(out),
                None => Err(TransportError::NoExitStatus {
                    target: self.target.clone(),
                }),
            },
            Ok(Err(e)) => Err(e),
            Err(_) => Err(TransportError::CommandTimeout {
                target: self.target.clone(),
                after: limit,
            }),
        }
    }

    /// Ends the command: EOF on its stdin, then waits (bounded) for it to exit.
    pub async fn release(self) {
        let Held {
            writer,
            mut reader,
            target,
            ..
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
