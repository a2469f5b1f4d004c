//! Framing of the fleet channel: a 4-byte big-endian length, then that many
//! bytes of JSON. A length above [`MAX_FRAME`] is refused before anything
//! of its body is read.

use super::protocol::MAX_FRAME;
use serde::Serialize;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Why a frame could not be read or written.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {len} bytes is above the limit of {MAX_FRAME} bytes")]
    TooLarge { len: usize },
    /// The JSON did not match the message type. Only the position and the
    /// category are kept: serde's text may quote the frame, which may hold
    /// a secret.
    #[error("frame is not a valid message ({category} error at line {line}, column {column})")]
    Malformed {
        category: &'static str,
        line: usize,
        column: usize,
    },
    #[error("channel closed")]
    Closed,
    #[error("channel I/O error: {0}")]
    Io(#[from] std::io::Error),
}

impl FrameError {
    fn malformed(e: &serde_json::Error) -> FrameError {
        use serde_json::error::Category;
        FrameError::Malformed {
            category: match e.classify() {
                Category::Io => "i/o",
                Category::Syntax => "syntax",
                Category::Data => "data",
                Category::Eof => "truncated",
            },
            line: e.line(),
            column: e.column(),
        }
    }
}

/// A message as one frame: length prefix and JSON.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    let mut out = vec![0u8; 4];
    serde_json::to_writer(&mut out, message).map_err(|e| FrameError::malformed(&e))?;
    let len = out.len() - 4;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    out[..4].copy_from_slice(&(len as u32).to_be_bytes());
    Ok(out)
}

/// Decodes a frame's JSON (the bytes after the length).
pub fn decode<T: serde::de::DeserializeOwned>(body: &[u8]) -> Result<T, FrameError> {
    serde_json::from_slice(body).map_err(|e| FrameError::malformed(&e))
}

/// Reads one frame's JSON. `Closed` at a clean end between frames; a
/// length above the limit is refused before its body is read (the body
/// stays unread: see [`skip`]).
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Result<Vec<u8>, FrameError> {
    let mut len = [0u8; 4];
    match r.read_exact(&mut len).await {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Err(FrameError::Closed),
        Err(e) => return Err(e.into()),
    }
    let len = u32::from_be_bytes(len) as usize;
    if len > MAX_FRAME {
        return Err(FrameError::TooLarge { len });
    }
    let mut body = vec![0u8; len];
    r.read_exact(&mut body).await?;
    Ok(body)
}

/// Reads and discards `len` bytes (the body of a refused frame), so the
/// stream stays in step without holding the body in memory.
pub async fn skip<R: AsyncRead + Unpin>(r: &mut R, len: usize) -> Result<(), FrameError> {
    let skipped = tokio::io::copy(&mut r.take(len as u64), &mut tokio::io::sink()).await?;
    if skipped < len as u64 {
        return Err(FrameError::Closed);
    }
    Ok(())
}

/// Writes one already encoded frame and flushes it.
pub async fn write_frame<W: AsyncWrite + Unpin>(w: &mut W, frame: &[u8]) -> Result<(), FrameError> {
    w.write_all(frame).await?;
    w.flush().await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fleet::protocol::{Answer, Call, Hello, HostConfinement, Request, PROTOCOL};

    fn hello() -> Request {
        Request {
            id: 7,
            call: Call::Hello(Hello {
                protocol: PROTOCOL,
                controller: "c1".into(),
                epoch: 3,
                data_dir: "/srv/gantry".into(),
                confinement: HostConfinement {
                    run_as: None,
                    sandbox: true,
                    read: vec![],
                    write: vec![],
                },
            }),
        }
    }

    #[tokio::test]
    async fn a_frame_round_trips_with_its_big_endian_length() {
        let frame = encode(&hello()).unwrap();
        let len = u32::from_be_bytes(frame[..4].try_into().unwrap()) as usize;
        assert_eq!(len, frame.len() - 4);
        let mut r = &frame[..];
        let body = read_frame(&mut r).await.unwrap();
        let back: Request = decode(&body).unwrap();
        assert_eq!(back.id, 7);
        match back.call {
            Call::Hello(h) => assert_eq!(
                h,
                match hello().call {
                    Call::Hello(h) => h,
                    _ => unreachable!(),
                }
            ),
            other => panic!("got {other:?}"),
        }
        // And then a clean end of the stream.
        assert!(matches!(read_frame(&mut r).await, Err(FrameError::Closed)));
    }

    #[tokio::test]
    async fn a_length_above_the_limit_is_refused_before_its_body_is_read() {
        let mut bytes = ((MAX_FRAME + 1) as u32).to_be_bytes().to_vec();
        bytes.extend_from_slice(b"{}");
        let mut r = &bytes[..];
        match read_frame(&mut r).await {
            Err(FrameError::TooLarge { len }) => assert_eq!(len, MAX_FRAME + 1),
            other => panic!("expected TooLarge, got {other:?}"),
        }
        // Nothing of the body was consumed.
        assert_eq!(r, b"{}");
    }

    #[test]
    fn encoding_refuses_a_message_above_the_limit() {
        let big = Answer::Logs {
            text: "x".repeat(MAX_FRAME + 10),
        };
        assert!(matches!(encode(&big), Err(FrameError::TooLarge { .. })));
    }

    #[tokio::test]
    async fn a_truncated_frame_is_an_io_error_not_a_message() {
        let frame = encode(&hello()).unwrap();
        let mut r = &frame[..frame.len() - 3];
        assert!(matches!(read_frame(&mut r).await, Err(FrameError::Io(_))));
    }

    #[test]
    fn malformed_json_names_the_position_but_never_quotes_the_frame() {
        let body =
            br#"{"id": 1, "call": {"call": "logs", "instance": "x", "max_bytes": "hunter2"}}"#;
        let e = decode::<Request>(body).unwrap_err();
        let text = e.to_string();
        assert!(text.contains("data error at line 1"), "{text}");
        assert!(!text.contains("hunter2"), "{text}");
        let e = decode::<Request>(b"{not json").unwrap_err();
        assert!(e.to_string().contains("syntax error"), "{e}");
    }
}
