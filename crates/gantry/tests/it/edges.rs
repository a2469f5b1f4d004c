//! The controller's edges: slow and silent clients, the connection limit,
//! answers outside the API, security headers, the bearer scheme, and the
//! CLI's output to terminals and pipes.

use crate::harness::*;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

/// Connects to `addr`, sends `opening`, then one header line a second until
/// the server closes the connection; answers how long that took, or `None`
/// when it was still open at `deadline`.
fn trickle(addr: &str, opening: &str, deadline: Duration) -> Option<Duration> {
    let started = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(1))).unwrap();
    s.write_all(opening.as_bytes()).unwrap();
    let mut n = 0;
    while started.elapsed() < deadline {
        let mut buf = [0u8; 1024];
        match s.read(&mut buf) {
            Ok(0) => return Some(started.elapsed()),
            Ok(_) => continue,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                n += 1;
                if s.write_all(format!("x-slow-{n}: 1\r\n").as_bytes())
                    .is_err()
                {
                    return Some(started.elapsed());
                }
            }
            Err(_) => return Some(started.elapsed()),
        }
    }
    None
}

#[test]
fn the_api_cuts_off_slow_clients_and_bounds_its_connections() {
    let header_timeout = Duration::from_secs(2);
    let mut g = Gantry::start_with_server_args(&[
        "--header-timeout",
        "2s",
        "--idle-timeout",
        "3s",
        "--max-connections",
        "3",
    ]);
    let url = g.api_url();
    let addr = url.trim_start_matches("http://").to_owned();
    let bound = header_timeout + Duration::from_secs(2);
    let probes = [
        ("trickled headers", "GET /healthz HTTP/1.1\r\nhost: x\r\n"),
        ("a silent client", ""),
    ];
    let running: Vec<_> = probes
        .iter()
        .map(|(_, opening)| {
            let (addr, opening) = (addr.clone(), opening.to_string());
            std::thread::spawn(move || trickle(&addr, &opening, Duration::from_secs(20)))
        })
        .collect();
    for ((what, _), probe) in probes.iter().zip(running) {
        let took = probe
            .join()
            .unwrap()
            .unwrap_or_else(|| panic!("{what}: still open after 20s"));
        assert!(took <= bound, "{what}: closed only after {took:?}");
    }

    // Three silent clients hold every slot; a fourth request waits for one.
    let held: Vec<TcpStream> = (0..3).map(|_| TcpStream::connect(&addr).unwrap()).collect();
    let started = Instant::now();
    let waiting = {
        let url = url.clone();
        std::thread::spawn(move || (http(&url, "GET", "/healthz", None, ""), started.elapsed()))
    };
    std::thread::sleep(Duration::from_millis(1000));
    assert!(!waiting.is_finished(), "served past the connection limit");
    let ((code, body), took) = waiting.join().unwrap();
    assert_eq!((code, body.as_str()), (200, "ok\n"));
    assert!(
        took <= header_timeout + Duration::from_secs(3),
        "served only after {took:?}"
    );
    drop(held);

    // Shutting down still works, even with an event stream open: it is
    // given a few seconds to finish, then the controller exits.
    let mut stream = TcpStream::connect(&addr).unwrap();
    write!(
        stream,
        "GET /api/v1/events HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {}\r\n\r\n",
        g.token()
    )
    .unwrap();
    let mut first = [0u8; 12];
    stream.read_exact(&mut first).unwrap();
    assert_eq!(&first, b"HTTP/1.1 200");
    let stopping = Instant::now();
    g.gantry(&["shutdown", "--workloads"]).ok();
    let mut server = g.server.take().unwrap();
    wait_until("the controller to exit", Duration::from_secs(15), || {
        server.try_wait().unwrap().is_some()
    });
    assert!(stopping.elapsed() < Duration::from_secs(10));
}
