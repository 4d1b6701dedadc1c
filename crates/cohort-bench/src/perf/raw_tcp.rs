//! The raw TCP loopback baseline: a peer process (`perf-sink --raw`) with plain tokio
//! sockets, and the measuring side's ping-pong and streaming clients.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::sink::{RawReady, SinkEvent, print_event};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};

use super::sample::Sample;
use crate::BenchResult;

/// Tribes' ACK frame: "FLT2002", length 3, ACK_DATA (6,2,3), "TLF2003". 21 bytes.
const ACK_FRAME: [u8; 21] = [
    70, 76, 84, 50, 48, 48, 50, 0, 0, 0, 3, 6, 2, 3, 84, 76, 70, 50, 48, 48, 51,
];
/// Chunk size of the raw streaming baseline.
const STREAM_CHUNK: usize = 64 * 1024;

/// The raw TCP peer: per connection a 5-byte header (mode, size), then either ping-pong
/// (`P`: read `size` bytes, answer 21) or streaming (`S`: read to EOF, answer the count).
pub(super) async fn raw_server() -> BenchResult {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
    let port = listener.local_addr()?.port();
    print_event(&SinkEvent::RawReady(RawReady {
        port,
        pid: std::process::id(),
    }));
    let mut stdin = tokio::io::stdin();
    let mut scratch = [0u8; 64];
    loop {
        tokio::select! {
            accepted = listener.accept() => {
                let (stream, _) = accepted?;
                tokio::spawn(async move {
                    if let Err(e) = serve_raw(stream).await {
                        tracing::debug!(error = %e, "raw connection ended");
                    }
                });
            }
            n = stdin.read(&mut scratch) => if !matches!(n, Ok(k) if k > 0) { return Ok(()) },
        }
    }
}

/// Serves one connection of [`raw_server`] until the client closes it.
async fn serve_raw(mut stream: TcpStream) -> std::io::Result<()> {
    stream.set_nodelay(true)?;
    let mut header = [0u8; 5];
    stream.read_exact(&mut header).await?;
    let size = u32::from_be_bytes([header[1], header[2], header[3], header[4]]) as usize;
    match header[0] {
        b'P' => {
            let mut buf = vec![0u8; size];
            loop {
                match stream.read_exact(&mut buf).await {
                    Ok(_) => stream.write_all(&ACK_FRAME).await?,
                    Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                    Err(e) => return Err(e),
                }
            }
        }
        _ => {
            let mut buf = vec![0u8; 256 * 1024];
            let mut total = 0u64;
            loop {
                let n = stream.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                total += n as u64;
            }
            stream.write_all(&total.to_be_bytes()).await
        }
    }
}

/// Ping-pong of `size` bytes against a 21-byte reply with `depth` frames outstanding on
/// one connection.
pub(super) async fn raw_ping_pong(
    addr: SocketAddr,
    size: usize,
    depth: usize,
    duration: Duration,
) -> std::io::Result<Sample> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut header = [b'P', 0, 0, 0, 0];
    header[1..].copy_from_slice(&(size as u32).to_be_bytes());
    stream.write_all(&header).await?;
    let (mut rd, mut wr) = stream.into_split();
    let frame = vec![b'x'; size];
    let permits = Arc::new(Semaphore::new(depth.max(1)));
    let (times_tx, mut times_rx) = mpsc::unbounded_channel::<Instant>();
    let start = Instant::now();
    let end = start + duration;
    let writer = {
        let permits = permits.clone();
        tokio::spawn(async move {
            while Instant::now() < end {
                let Ok(p) = permits.acquire().await else {
                    break;
                };
                p.forget();
                let _ = times_tx.send(Instant::now());
                wr.write_all(&frame).await?;
            }
            Ok::<_, std::io::Error>(wr)
        })
    };
    let mut hist = Sample::new_hist();
    let mut count = 0u64;
    let mut reply = [0u8; 21];
    while let Some(t) = times_rx.recv().await {
        rd.read_exact(&mut reply).await?;
        let _ = hist.record(t.elapsed().as_nanos().max(1) as u64);
        count += 1;
        permits.add_permits(1);
    }
    let secs = start.elapsed().as_secs_f64();
    let _wr = writer.await.map_err(std::io::Error::other)??;
    Ok(Sample {
        count,
        secs,
        hist,
        ..Sample::empty()
    })
}

/// One-way streaming in 64 KiB writes; MB/s as counted by the receiver.
pub(super) async fn raw_stream(addr: SocketAddr, duration: Duration) -> std::io::Result<f64> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let mut header = [b'S', 0, 0, 0, 0];
    header[1..].copy_from_slice(&(STREAM_CHUNK as u32).to_be_bytes());
    stream.write_all(&header).await?;
    let chunk = vec![b'x'; STREAM_CHUNK];
    let start = Instant::now();
    while start.elapsed() < duration {
        stream.write_all(&chunk).await?;
    }
    stream.shutdown().await?;
    let mut total = [0u8; 8];
    stream.read_exact(&mut total).await?;
    let secs = start.elapsed().as_secs_f64();
    Ok(u64::from_be_bytes(total) as f64 / secs / 1e6)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ack_frame_is_tribes_ack() {
        assert_eq!(&ACK_FRAME[..7], b"FLT2002");
        assert_eq!(&ACK_FRAME[14..], b"TLF2003");
        assert_eq!(&ACK_FRAME[11..14], &[6, 2, 3]);
    }
}
