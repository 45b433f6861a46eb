//! lz4 replies from a real `gocacher serve`: an output's frame is kept on
//! disk beside it, made after its PUT (or by its first reply when missing),
//! and sent to clients that accept lz4; others get the bytes as they are.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::support::seedserver::{Seed, SeedServer};
use super::support::{assert_store_whole, unlz4};
use super::{hex_id, put_head, request};

/// One GET on a fresh connection: status, head (lower-cased) and body.
fn get(addr: SocketAddr, path: &str, extra: &str) -> (u16, String, Vec<u8>) {
    let mut c = TcpStream::connect(addr).unwrap();
    c.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let head = format!("GET {path} HTTP/1.1\r\nHost: t\r\n{extra}Connection: close\r\n\r\n");
    c.write_all(head.as_bytes()).unwrap();
    let mut reply = Vec::new();
    c.read_to_end(&mut reply).unwrap();
    let split = reply
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("a reply head");
    let head = String::from_utf8_lossy(&reply[..split]).to_lowercase();
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    (status, head, reply[split + 4..].to_vec())
}

fn frame_of(store: &Path, output: &str) -> PathBuf {
    store.join(&output[..2]).join(format!("{output}-z"))
}

/// Waits until `path` exists (its frame is made after the PUT is answered).
fn wait_for_file(path: &Path, server: &SeedServer) -> Vec<u8> {
    let deadline = Instant::now() + Duration::from_secs(20);
    while !path.exists() {
        assert!(
            Instant::now() < deadline,
            "{} never made\n{}",
            path.display(),
            server.log()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    std::fs::read(path).unwrap()
}

#[test]
fn lz4_replies_come_from_frames_kept_beside_the_outputs() {
    let server = SeedServer::start(Seed::Serve);
    let (addr, store) = (server.addr(), server.store_dir());
    let text: Vec<u8> = (0..20_000)
        .flat_map(|i| format!("line {i} of a compressible output\n").into_bytes())
        .collect();
    let noise = super::noise(&mut 7, 100_000);
    let want_lz4 = "Want-Object: 1\r\nAccept-Encoding: gzip, lz4;q=0.5\r\n";
    let mut ids = Vec::new();
    for (name, data) in [("text", &text), ("noise", &noise)] {
        let (action, output) = (hex_id(name.as_bytes()), hex_id(data));
        let (status, reply) = request(addr, &put_head(&action, &output, data.len()), data);
        assert_eq!(status, 204, "{reply}");
        ids.push((action, output));
    }

    // Made after the PUT: a frame for the text, an empty file for noise.
    let text_frame = wait_for_file(&frame_of(&store, &ids[0].1), &server);
    assert!(text_frame.len() < text.len() / 2, "{}", text_frame.len());
    assert_eq!(unlz4(&text_frame), text);
    assert!(wait_for_file(&frame_of(&store, &ids[1].1), &server).is_empty());

    // A client that accepts lz4 gets the kept frame as it is.
    let action_path = format!("/action/{}", ids[0].0);
    let (status, head, body) = get(addr, &action_path, want_lz4);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-encoding: lz4"), "{head}");
    assert!(
        head.contains(&format!("x-uncompressed-length: {}", text.len())),
        "{head}"
    );
    assert!(
        head.contains(&format!("go-output-id: {}", ids[0].1)),
        "{head}"
    );
    assert_eq!(body, text_frame);

    // One that does not gets the bytes; so does anyone for noise.
    let (status, head, body) = get(addr, &action_path, "Want-Object: 1\r\n");
    assert_eq!(status, 200, "{head}");
    assert!(!head.contains("content-encoding"), "{head}");
    assert_eq!(body, text);
    let (status, head, body) = get(addr, &format!("/action/{}", ids[1].0), want_lz4);
    assert_eq!(status, 200, "{head}");
    assert!(!head.contains("content-encoding"), "{head}");
    assert_eq!(body, noise);
    let (status, head, body) = get(addr, &format!("/output/{}", ids[0].1), want_lz4);
    assert_eq!(status, 200, "{head}");
    assert_eq!(unlz4(&body), text);

    // A frame trimmed away is made again by the next reply.
    std::fs::remove_file(frame_of(&store, &ids[0].1)).unwrap();
    let (status, head, body) = get(addr, &action_path, want_lz4);
    assert_eq!(status, 200, "{head}");
    assert!(head.contains("content-encoding: lz4"), "{head}");
    assert_eq!(unlz4(&body), text);
    assert_eq!(
        unlz4(&wait_for_file(&frame_of(&store, &ids[0].1), &server)),
        text
    );

    // An output trimmed away with its frame left behind is a miss.
    std::fs::remove_file(store.join(&ids[0].1[..2]).join(format!("{}-d", ids[0].1))).unwrap();
    let (status, head, _) = get(addr, &action_path, want_lz4);
    assert_eq!(status, 404, "{head}");
    assert_store_whole(&store);
}
