//! A gocacher release served on 127.0.0.1 as GitHub serves release assets
//! (`GOCACHER_RELEASE_URL` points the action at it): the archive of the
//! binary this test suite built, and its SHA256SUMS.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::process::Command;

use sha2::{Digest, Sha256};

use super::act::{TARGET, VERSION};

/// A release directory (`VERSION/ARCHIVE` and `VERSION/SHA256SUMS`) served
/// over HTTP on 127.0.0.1, as GitHub serves release assets. With
/// `tamper`, the archive differs from what SHA256SUMS lists.
pub struct Release {
    /// Kept so the served files live as long as the server.
    _dir: tempfile::TempDir,
    pub url: String,
    pub binary_sha256: String,
}

impl Release {
    pub fn serve(tamper: bool) -> Release {
        let dir = tempfile::tempdir().unwrap();
        let stage = dir.path().join("stage/gocacher");
        std::fs::create_dir_all(&stage).unwrap();
        let bin = std::fs::read(env!("CARGO_BIN_EXE_gocacher")).unwrap();
        std::fs::write(stage.join("gocacher"), &bin).unwrap();
        let rel = dir.path().join(VERSION);
        std::fs::create_dir_all(&rel).unwrap();
        let archive = format!("gocacher-{TARGET}.tar.gz");
        let st = Command::new("tar")
            .arg("-czf")
            .arg(rel.join(&archive))
            .arg("-C")
            .arg(dir.path().join("stage"))
            .arg("gocacher")
            .status()
            .unwrap();
        assert!(st.success());
        let sum = hex::encode(Sha256::digest(std::fs::read(rel.join(&archive)).unwrap()));
        std::fs::write(
            rel.join("SHA256SUMS"),
            format!(
                "{sum}  {archive}\n{}  gocacher-aarch64-apple-darwin.tar.gz\n",
                "0".repeat(64)
            ),
        )
        .unwrap();
        if tamper {
            let mut f = std::fs::OpenOptions::new()
                .append(true)
                .open(rel.join(&archive))
                .unwrap();
            f.write_all(b"tampered").unwrap();
        }
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let root = dir.path().to_path_buf();
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                let Ok(mut conn) = conn else { continue };
                let mut reader = BufReader::new(conn.try_clone().unwrap());
                let mut line = String::new();
                if reader.read_line(&mut line).is_err() {
                    continue;
                }
                loop {
                    let mut h = String::new();
                    if reader.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                        break;
                    }
                }
                let path = line.split_whitespace().nth(1).unwrap_or("/").to_string();
                let file = root.join(path.trim_start_matches('/'));
                let reply = match std::fs::read(&file) {
                    Ok(body) if !path.contains("..") => {
                        let mut r = format!(
                            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                            body.len()
                        )
                        .into_bytes();
                        r.extend(body);
                        r
                    }
                    _ => {
                        b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
                            .to_vec()
                    }
                };
                let _ = conn.write_all(&reply);
            }
        });
        Release {
            _dir: dir,
            url,
            binary_sha256: hex::encode(Sha256::digest(&bin)),
        }
    }
}
