//! `gocacher check`: walks through what the bucket tier needs (credentials,
//! the bucket, write, read and delete of a probe object) and prints each
//! step's latency, so a CI job's cache trouble can be seen in one command.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;

use crate::config::RemoteConfig;
use crate::remote::s3::{Fetched, S3Store};
use crate::remote::StoreSettings;

/// Runs the checks, printing one line per step on stdout. Returns an error
/// naming the first step that failed.
pub async fn run(config: &RemoteConfig) -> Result<()> {
    let StoreSettings::S3(s3) = &config.store else {
        bail!("check works with --remote s3://BUCKET[/PREFIX]");
    };
    let (store, profile) = S3Store::connect(s3).await;
    let limit = config.opts.timeout.max(Duration::from_secs(5));
    println!("checking {}", profile.describe);

    let creds = step("credentials", limit, store.credentials_source()).await?;
    println!("  {creds}");
    step("bucket", limit, store.head_bucket()).await?;
    let key = probe_key(&s3.prefix);
    let body = format!("gocacher check {}\n", std::process::id());
    if config.opts.read_only {
        println!("write, read, delete: skipped (read-only)");
        return Ok(());
    }
    step(
        "write",
        limit,
        store.put_object(&key, None, ByteStream::from(body.clone().into_bytes())),
    )
    .await?;
    let body_len = body.len();
    let read = step("read", limit, async {
        match store.get_object(&key).await? {
            Fetched::Missing => Ok::<_, crate::remote::s3::RemoteError>(None),
            Fetched::Found { body, .. } => {
                Ok(body.collect(&key, body_len).await.ok().map(Bytes::from))
            }
        }
    })
    .await;
    // Delete even when the read failed, so no probe is left behind.
    let deleted = step("delete", limit, store.delete_object(&key)).await;
    match read? {
        Some(got) if got == body.as_bytes() => {}
        Some(_) => bail!("read: the probe object came back with other bytes"),
        None => bail!("read: the probe object was not found right after writing it"),
    }
    deleted?;
    println!("ok: gocacher can use {}", profile.describe);
    Ok(())
}

fn probe_key(prefix: &str) -> String {
    let nanos = crate::wire::now_nanos();
    let name = format!("gocacher/check/{}-{nanos}", std::process::id());
    if prefix.is_empty() {
        name
    } else {
        format!("{prefix}/{name}")
    }
}

async fn step<T, E: std::fmt::Display>(
    name: &str,
    limit: Duration,
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T> {
    let start = Instant::now();
    let out = tokio::time::timeout(limit, fut).await;
    let ms = start.elapsed().as_secs_f64() * 1e3;
    match out {
        Ok(Ok(v)) => {
            println!("{name:<12} ok      {ms:8.1} ms");
            Ok(v)
        }
        Ok(Err(e)) => {
            println!("{name:<12} FAILED  {ms:8.1} ms  {e}");
            bail!("{name}: {e}")
        }
        Err(_) => {
            println!("{name:<12} FAILED  {ms:8.1} ms  no answer within {limit:?}");
            bail!("{name}: no answer within {limit:?}")
        }
    }
}
