//! Reads one HTTP/1.1 request (head and `Content-Length` body) from a
//! socket, for the benches' fake providers. Benches that need it include
//! this file by path.

use tokio::io::AsyncReadExt;
use tokio::net::TcpStream;

/// Reads the next request on `socket` and drops it from `buffer`; false
/// when the peer closed the connection first.
pub async fn read_request(socket: &mut TcpStream, buffer: &mut Vec<u8>) -> bool {
    let mut chunk = [0u8; 8192];
    let (header_end, length) = loop {
        if let Some(end) = buffer.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buffer[..end]).to_lowercase();
            let length = head
                .lines()
                .find_map(|line| line.strip_prefix("content-length:"))
                .and_then(|value| value.trim().parse::<usize>().ok())
                .unwrap_or(0);
            break (end + 4, length);
        }
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    };
    while buffer.len() < header_end + length {
        match socket.read(&mut chunk).await {
            Ok(0) | Err(_) => return false,
            Ok(read) => buffer.extend_from_slice(&chunk[..read]),
        }
    }
    buffer.drain(..header_end + length);
    true
}
