//! The origin store: S3 (or any S3-protocol server) through aws-sdk-s3.
//!
//! Endpoint, region and path-style addressing come from [`S3Args`];
//! credentials from the standard AWS chain (`AWS_ACCESS_KEY_ID` /
//! `AWS_SECRET_ACCESS_KEY`, profile files, instance roles).

use std::time::Duration;

use anyhow::Context;
use aws_sdk_s3::config::{RequestChecksumCalculation, ResponseChecksumValidation};
use aws_sdk_s3::primitives::ByteStream;
use bytes::Bytes;
use clap::Args;

/// Where the S3 endpoint is.
#[derive(Debug, Clone, Args)]
pub struct S3Args {
    /// S3 endpoint URL; leave unset for AWS itself.
    #[arg(long, env = "OTA_S3_ENDPOINT")]
    pub s3_endpoint: Option<String>,
    /// S3 region.
    #[arg(long, env = "AWS_REGION", default_value = "us-east-1")]
    pub s3_region: String,
    /// Use path-style addressing (`http://host/bucket/key`), as local S3 servers need.
    #[arg(long, env = "OTA_S3_PATH_STYLE", default_value_t = false)]
    pub s3_path_style: bool,
}

/// An `s3://bucket/key` location.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// Bucket name.
    pub bucket: String,
    /// Object key.
    pub key: String,
}

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "s3://{}/{}", self.bucket, self.key)
    }
}

impl std::str::FromStr for S3Location {
    type Err = anyhow::Error;

    /// Parses `s3://bucket/key`. Errors: another scheme, an empty bucket or key.
    fn from_str(s: &str) -> anyhow::Result<Self> {
        let rest = s
            .strip_prefix("s3://")
            .with_context(|| format!("{s:?} is not an s3://bucket/key URL"))?;
        let (bucket, key) = rest
            .split_once('/')
            .with_context(|| format!("{s:?} has no object key"))?;
        if bucket.is_empty() || key.is_empty() {
            anyhow::bail!("{s:?} needs both a bucket and a key");
        }
        Ok(S3Location {
            bucket: bucket.into(),
            key: key.into(),
        })
    }
}

/// Builds an S3 client from the arguments and the standard credential chain.
pub async fn client(args: &S3Args) -> aws_sdk_s3::Client {
    let mut loader = aws_config::defaults(aws_config::BehaviorVersion::latest())
        .region(aws_config::Region::new(args.s3_region.clone()))
        .timeout_config(
            aws_config::timeout::TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(60))
                .build(),
        );
    if let Some(e) = &args.s3_endpoint {
        loader = loader.endpoint_url(e);
    }
    let shared = loader.load().await;
    let conf = aws_sdk_s3::config::Builder::from(&shared)
        .force_path_style(args.s3_path_style)
        .request_checksum_calculation(RequestChecksumCalculation::WhenRequired)
        .response_checksum_validation(ResponseChecksumValidation::WhenRequired)
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// Renders an SDK error with its service message, e.g. `NoSuchKey: ...`.
pub fn describe<E: std::error::Error + 'static>(e: &aws_sdk_s3::error::SdkError<E>) -> String {
    use aws_sdk_s3::error::DisplayErrorContext;
    format!("{}", DisplayErrorContext(e))
}

/// Object size in bytes and ETag. Errors name the location and say whether it
/// is missing.
pub async fn head(s3: &aws_sdk_s3::Client, loc: &S3Location) -> anyhow::Result<(u64, Option<String>)> {
    let out = s3
        .head_object()
        .bucket(&loc.bucket)
        .key(&loc.key)
        .send()
        .await
        .map_err(|e| {
            if e.as_service_error().is_some_and(|se| se.is_not_found()) {
                anyhow::anyhow!("{loc} does not exist")
            } else {
                anyhow::anyhow!("cannot read {loc}: {}", describe(&e))
            }
        })?;
    Ok((out.content_length.unwrap_or(0).max(0) as u64, out.e_tag))
}

/// Starts one ranged GET of `len` bytes (at least 1) at byte `offset` and
/// returns its body, to be read as it arrives. The caller checks the length.
pub async fn get_range_body(
    s3: &aws_sdk_s3::Client,
    loc: &S3Location,
    offset: u64,
    len: u64,
) -> anyhow::Result<ByteStream> {
    let out = s3
        .get_object()
        .bucket(&loc.bucket)
        .key(&loc.key)
        .range(format!("bytes={}-{}", offset, offset + len - 1))
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("ranged GET of {loc} failed: {}", describe(&e)))?;
    Ok(out.body)
}

/// Reads `len` bytes at `offset` with one ranged GET.
pub async fn get_range(s3: &aws_sdk_s3::Client, loc: &S3Location, offset: u64, len: u64) -> anyhow::Result<Bytes> {
    let data = get_range_body(s3, loc, offset, len)
        .await?
        .collect()
        .await
        .with_context(|| format!("reading {loc} bytes {offset}+{len}"))?
        .into_bytes();
    if data.len() as u64 != len {
        anyhow::bail!("{loc}: asked {len} bytes at {offset}, got {}", data.len());
    }
    Ok(data)
}

/// Writes an object.
pub async fn put(s3: &aws_sdk_s3::Client, loc: &S3Location, body: ByteStream) -> anyhow::Result<()> {
    s3.put_object()
        .bucket(&loc.bucket)
        .key(&loc.key)
        .body(body)
        .send()
        .await
        .map_err(|e| anyhow::anyhow!("cannot write {loc}: {}", describe(&e)))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_s3_urls() {
        let l: S3Location = "s3://bucket/a/b.deb".parse().unwrap();
        assert_eq!(
            l,
            S3Location {
                bucket: "bucket".into(),
                key: "a/b.deb".into()
            }
        );
        assert_eq!(l.to_string(), "s3://bucket/a/b.deb");
        assert!("http://x/y".parse::<S3Location>().is_err());
        assert!("s3://bucket".parse::<S3Location>().is_err());
        assert!("s3:///key".parse::<S3Location>().is_err());
    }
}
