//! Sockets for the tests: opened inside namespaces, read with deadlines.

use std::io::{self, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use super::netns::in_netns;

/// How long a packet that should arrive is given to.
pub const PATIENCE: Duration = Duration::from_secs(3);

pub fn listen_in(netns: &str, at: SocketAddr) -> io::Result<TcpListener> {
    in_netns(netns, move || TcpListener::bind(at))
}

pub fn connect_from(netns: &str, to: SocketAddr) -> io::Result<TcpStream> {
    in_netns(netns, move || TcpStream::connect_timeout(&to, PATIENCE))
}

pub fn udp_in(netns: &str, at: SocketAddr) -> io::Result<UdpSocket> {
    in_netns(netns, move || UdpSocket::bind(at))
}

/// The connection `listener` has, or gets within [`PATIENCE`].
pub fn accept(listener: &TcpListener) -> io::Result<TcpStream> {
    listener.set_nonblocking(true)?;
    let deadline = Instant::now() + PATIENCE;
    loop {
        match listener.accept() {
            Ok((stream, _)) => {
                stream.set_nonblocking(false)?;
                return Ok(stream);
            }
            Err(e) if e.kind() == io::ErrorKind::WouldBlock && Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(10));
            }
            Err(e) => return Err(e),
        }
    }
}

/// What `stream` reads within `within`: data, the end, or an error (a
/// timeout when nothing came).
pub fn read_within(stream: &mut TcpStream, within: Duration) -> io::Result<Vec<u8>> {
    stream.set_read_timeout(Some(within))?;
    let mut buffer = [0; 64];
    let read = stream.read(&mut buffer)?;
    Ok(buffer[..read].to_vec())
}

/// Sends a word each way and checks both arrive.
pub fn exchange(a: &mut TcpStream, b: &mut TcpStream) -> io::Result<()> {
    one_way(a, b)?;
    one_way(b, a)
}

fn one_way(from: &mut TcpStream, to: &mut TcpStream) -> io::Result<()> {
    from.write_all(b"ping")?;
    let got = read_within(to, PATIENCE)?;
    if got != b"ping" {
        return Err(io::Error::other(format!("read {got:?} instead of ping")));
    }
    Ok(())
}

/// The datagram `socket` receives within `within`, if any.
pub fn datagram_within(socket: &UdpSocket, within: Duration) -> Option<Vec<u8>> {
    socket.set_read_timeout(Some(within)).ok()?;
    let mut buffer = [0; 64];
    let (read, _) = socket.recv_from(&mut buffer).ok()?;
    Some(buffer[..read].to_vec())
}
