//! The protocol floor without a runtime: the Go floor (`../proto`) again,
//! in one thread of blocking reads and writes, with no JSON library, no
//! allocation per get beyond the reply, and no verification. Nothing a
//! GOCACHEPROG does on a local hit can cost less than this.
//!
//!     rustc -O --edition 2021 -o /tmp/proto-rs bench/floor/proto-rs/main.rs
//!     GOCACHEPROG="/tmp/proto-rs DIR" go build std

use std::fs;
use std::io::{self, BufRead, BufReader, BufWriter, Write};
use std::path::{Path, PathBuf};

const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

fn b64_decode(s: &[u8]) -> Vec<u8> {
    let mut val = [255u8; 256];
    for (i, &c) in B64.iter().enumerate() {
        val[c as usize] = i as u8;
    }
    let mut out = Vec::with_capacity(s.len() / 4 * 3);
    let (mut acc, mut bits) = (0u32, 0);
    for &c in s {
        let v = val[c as usize];
        if v == 255 {
            continue; // padding, escapes
        }
        acc = (acc << 6) | v as u32;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
        }
    }
    out
}

fn b64_encode(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len().div_ceil(3) * 4);
    for c in b.chunks(3) {
        let n = (c[0] as u32) << 16 | (*c.get(1).unwrap_or(&0) as u32) << 8 | *c.get(2).unwrap_or(&0) as u32;
        for i in 0..4 {
            if i <= c.len() {
                out.push(B64[(n >> (18 - 6 * i) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The value of `"key":` in a one-line JSON object: a string's contents or a
/// number's digits.
fn field<'a>(line: &'a [u8], key: &str) -> Option<&'a [u8]> {
    let pat = format!("\"{key}\":");
    let at = line.windows(pat.len()).position(|w| w == pat.as_bytes())? + pat.len();
    let rest = &line[at..];
    if rest.first() == Some(&b'"') {
        let end = rest[1..].iter().position(|&c| c == b'"')?;
        Some(&rest[1..1 + end])
    } else {
        let end = rest.iter().position(|&c| c == b',' || c == b'}').unwrap_or(rest.len());
        Some(&rest[..end])
    }
}

fn path(root: &Path, id: &[u8], suffix: &str) -> PathBuf {
    let h = hex(id);
    root.join(&h[..2]).join(h + suffix)
}

fn get(root: &Path, action: &[u8]) -> Option<(Vec<u8>, u64, PathBuf)> {
    let text = fs::read_to_string(path(root, action, "-a")).ok()?;
    let mut f = text.split_whitespace();
    let (out_hex, size) = (f.next()?, f.next()?.parse::<u64>().ok()?);
    let out: Vec<u8> = (0..out_hex.len() / 2)
        .map(|i| u8::from_str_radix(&out_hex[2 * i..2 * i + 2], 16))
        .collect::<Result<_, _>>()
        .ok()?;
    let p = path(root, &out, "-d");
    (fs::metadata(&p).ok()?.len() == size).then_some((out, size, p))
}

fn put(root: &Path, action: &[u8], output: &[u8], body: &[u8]) -> io::Result<PathBuf> {
    let p = path(root, output, "-d");
    fs::create_dir_all(p.parent().unwrap())?;
    fs::write(&p, body)?;
    let a = path(root, action, "-a");
    fs::create_dir_all(a.parent().unwrap())?;
    fs::write(a, format!("{} {} 0\n", hex(output), body.len()))?;
    Ok(p)
}

fn main() -> io::Result<()> {
    let root = PathBuf::from(std::env::args().nth(1).expect("usage: proto-rs DIR"));
    fs::create_dir_all(&root)?;
    let root = fs::canonicalize(root)?;
    let mut input = BufReader::with_capacity(1 << 16, io::stdin().lock());
    let mut out = BufWriter::new(io::stdout().lock());
    out.write_all(b"{\"ID\":0,\"KnownCommands\":[\"get\",\"put\",\"close\"]}\n")?;
    out.flush()?;
    let mut line = Vec::new();
    loop {
        line.clear();
        if input.read_until(b'\n', &mut line)? == 0 {
            return Ok(());
        }
        if line.iter().all(|c| c.is_ascii_whitespace()) {
            continue;
        }
        let id = String::from_utf8_lossy(field(&line, "ID").unwrap_or(b"0")).into_owned();
        let reply = match field(&line, "Command").unwrap_or(b"") {
            b"get" => match get(&root, &b64_decode(field(&line, "ActionID").unwrap_or(b""))) {
                Some((o, size, p)) => format!(
                    "{{\"ID\":{id},\"OutputID\":\"{}\",\"Size\":{size},\"DiskPath\":\"{}\"}}\n",
                    b64_encode(&o),
                    p.display()
                ),
                None => format!("{{\"ID\":{id},\"Miss\":true}}\n"),
            },
            b"put" => {
                let action = b64_decode(field(&line, "ActionID").unwrap_or(b""));
                let output = b64_decode(field(&line, "OutputID").unwrap_or(b""));
                let size: u64 = std::str::from_utf8(field(&line, "BodySize").unwrap_or(b"0"))
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(0);
                let mut body = Vec::new();
                if size > 0 {
                    let mut b: Vec<u8> = Vec::new();
                    while b.iter().all(|c| c.is_ascii_whitespace()) {
                        b.clear();
                        input.read_until(b'\n', &mut b)?;
                    }
                    body = b64_decode(&b);
                }
                match put(&root, &action, &output, &body) {
                    Ok(p) => format!("{{\"ID\":{id},\"DiskPath\":\"{}\"}}\n", p.display()),
                    Err(e) => format!("{{\"ID\":{id},\"Err\":\"{e}\"}}\n"),
                }
            }
            b"close" => {
                writeln!(out, "{{\"ID\":{id}}}")?;
                return out.flush();
            }
            _ => format!("{{\"ID\":{id},\"Err\":\"unknown command\"}}\n"),
        };
        out.write_all(reply.as_bytes())?;
        out.flush()?;
    }
}
