//! ListMultipartUploads for the embedded store, which `s3s-fs` 0.14 does not implement.
//!
//! The uploads in progress are kept in the bucket's key index ([`super::key_index`]), which survives a restart:
//! s3s-fs itself only knows the stored name of an upload's key. `parse_metadata_name` reads the names s3s-fs gave
//! an upload's attribute file in its own layout, for the migration from it.

use std::time::SystemTime;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use percent_encoding::utf8_percent_encode;

use super::PATH_ENCODE;
use lakegate_s3_protocol::xml::{S3_NS, escape};

/// S3's default and largest page.
const MAX_UPLOADS: usize = 1000;
/// Owner and initiator shown for every upload: the embedded store does not know who started one.
pub(super) const OWNER: &str = "lakegate";

const INITIATED_FORMAT: &[time::format_description::FormatItem<'static>] =
    time::macros::format_description!("[year]-[month]-[day]T[hour]:[minute]:[second].[subsecond digits:3]Z");

/// One upload in progress.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Upload {
    pub key: String,
    pub upload_id: String,
    pub initiated: SystemTime,
}

/// The parameters of a ListMultipartUploads request.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub(super) struct ListParams {
    pub prefix: String,
    pub delimiter: Option<String>,
    pub key_marker: String,
    pub upload_id_marker: String,
    pub max_uploads: usize,
    pub url_encoding: bool,
}

/// Why the parameters were refused (an S3 `InvalidArgument`).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub(super) struct InvalidArgument(pub &'static str);

impl ListParams {
    /// Reads the decoded query pairs of the request.
    pub fn from_query(query: &[(String, String)]) -> Result<Self, InvalidArgument> {
        let get = |name: &str| query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
        let max_uploads = match get("max-uploads") {
            None => MAX_UPLOADS,
            Some(v) => v
                .parse::<usize>()
                .map_err(|_| InvalidArgument("max-uploads must be an integer from 0 to 2147483647"))?
                .min(MAX_UPLOADS),
        };
        let url_encoding = match get("encoding-type") {
            None => false,
            Some("url") => true,
            Some(_) => return Err(InvalidArgument("encoding-type must be url")),
        };
        Ok(Self {
            prefix: get("prefix").unwrap_or_default().to_owned(),
            delimiter: get("delimiter").filter(|d| !d.is_empty()).map(str::to_owned),
            key_marker: get("key-marker").unwrap_or_default().to_owned(),
            upload_id_marker: get("upload-id-marker").unwrap_or_default().to_owned(),
            max_uploads,
            url_encoding,
        })
    }
}

/// `(bucket, key, upload id)` of `.bucket-<b64>.object-<b64>.upload-<uuid>.metadata.json`.
pub(super) fn parse_metadata_name(name: &str) -> Option<(String, String, String)> {
    let rest = name.strip_prefix(".bucket-")?.strip_suffix(".metadata.json")?;
    let (bucket, rest) = rest.split_once(".object-")?;
    let (key, upload_id) = rest.split_once(".upload-")?;
    let uuid = uuid::Uuid::parse_str(upload_id).ok()?;
    let decode = |s: &str| URL_SAFE_NO_PAD.decode(s).ok().and_then(|b| String::from_utf8(b).ok());
    Some((decode(bucket)?, decode(key)?, uuid.to_string()))
}

/// The ListMultipartUploadsResult document for `uploads` (all of the bucket's, in order).
pub(super) fn render(bucket: &str, params: &ListParams, uploads: &[Upload]) -> String {
    let enc = |s: &str| {
        if params.url_encoding { escape(&utf8_percent_encode(s, PATH_ENCODE).to_string()) } else { escape(s) }
    };
    let after_marker = |u: &Upload| {
        if params.key_marker.is_empty() {
            return true;
        }
        u.key > params.key_marker
    };
    // With an upload-id marker, the uploads of the marker key that come after that upload are listed too.
    let marker_position = (!params.key_marker.is_empty() && !params.upload_id_marker.is_empty())
        .then(|| uploads.iter().position(|u| u.key == params.key_marker && u.upload_id == params.upload_id_marker))
        .flatten();
    let mut uploads_out: Vec<&Upload> = Vec::new();
    let mut prefixes: Vec<String> = Vec::new();
    let mut truncated = false;
    let mut last: Option<(String, String)> = None;
    for (i, u) in uploads.iter().enumerate() {
        let same_key_after = marker_position.is_some_and(|p| i > p && u.key == params.key_marker);
        if !u.key.starts_with(&params.prefix) || !(after_marker(u) || same_key_after) {
            continue;
        }
        let common = params.delimiter.as_deref().and_then(|d| {
            let rest = u.key.get(params.prefix.len()..)?;
            rest.find(d).map(|at| format!("{}{}", params.prefix, rest.get(..at + d.len()).unwrap_or_default()))
        });
        if let Some(p) = &common
            && prefixes.last() == Some(p)
        {
            continue;
        }
        if uploads_out.len() + prefixes.len() >= params.max_uploads {
            truncated = true;
            break;
        }
        match common {
            Some(p) => {
                last = Some((p.clone(), String::new()));
                prefixes.push(p);
            }
            None => {
                last = Some((u.key.clone(), u.upload_id.clone()));
                uploads_out.push(u);
            }
        }
    }
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListMultipartUploadsResult xmlns=\"{S3_NS}\">\
         <Bucket>{}</Bucket><KeyMarker>{}</KeyMarker><UploadIdMarker>{}</UploadIdMarker>",
        escape(bucket),
        enc(&params.key_marker),
        escape(&params.upload_id_marker),
    );
    if truncated && let Some((key, id)) = &last {
        out.push_str(&format!(
            "<NextKeyMarker>{}</NextKeyMarker><NextUploadIdMarker>{}</NextUploadIdMarker>",
            enc(key),
            escape(id)
        ));
    }
    if params.url_encoding {
        out.push_str("<EncodingType>url</EncodingType>");
    }
    out.push_str(&format!("<Prefix>{}</Prefix>", enc(&params.prefix)));
    if let Some(d) = &params.delimiter {
        out.push_str(&format!("<Delimiter>{}</Delimiter>", enc(d)));
    }
    out.push_str(&format!("<MaxUploads>{}</MaxUploads><IsTruncated>{truncated}</IsTruncated>", params.max_uploads));
    for u in uploads_out {
        let initiated = time::OffsetDateTime::from(u.initiated).format(INITIATED_FORMAT).unwrap_or_default();
        out.push_str(&format!(
            "<Upload><Key>{}</Key><UploadId>{}</UploadId><Initiator><ID>{OWNER}</ID><DisplayName>{OWNER}\
             </DisplayName></Initiator><Owner><ID>{OWNER}</ID><DisplayName>{OWNER}</DisplayName></Owner>\
             <StorageClass>STANDARD</StorageClass><Initiated>{initiated}</Initiated></Upload>",
            enc(&u.key),
            escape(&u.upload_id),
        ));
    }
    for p in prefixes {
        out.push_str(&format!("<CommonPrefixes><Prefix>{}</Prefix></CommonPrefixes>", enc(&p)));
    }
    out.push_str("</ListMultipartUploadsResult>");
    out
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    fn upload(key: &str, id: &str, secs: u64) -> Upload {
        Upload {
            key: key.into(),
            upload_id: id.into(),
            initiated: SystemTime::UNIX_EPOCH + std::time::Duration::from_secs(secs),
        }
    }

    fn params(query: &[(&str, &str)]) -> ListParams {
        let q: Vec<(String, String)> = query.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        ListParams::from_query(&q).unwrap()
    }

    fn keys(doc: &str) -> Vec<&str> {
        doc.split("<Key>").skip(1).filter_map(|s| s.split("</Key>").next()).collect()
    }

    #[test]
    fn metadata_file_names_give_bucket_key_and_upload() {
        let id = "7d9b7a52-6a3c-4c55-9f3c-1f1f0b0e8c11";
        let name = format!(".bucket-{}.object-{}.upload-{id}.metadata.json", "bGFrZQ", "c2FsZXMvYS5iaW4");
        assert_eq!(parse_metadata_name(&name), Some(("lake".into(), "sales/a.bin".into(), id.into())));
        assert_eq!(parse_metadata_name(".bucket-bGFrZQ.object-c2FsZXMvYS5iaW4.metadata.json"), None);
        assert_eq!(parse_metadata_name(".upload-x.json"), None);
    }

    #[test]
    fn uploads_are_listed_under_the_prefix_only_and_pages_are_bounded() {
        let all = [upload("hr/x", "1", 1), upload("sales/a", "2", 2), upload("sales/b", "3", 3)];
        let doc = render("lake", &params(&[("prefix", "sales/")]), &all);
        assert_eq!(keys(&doc), ["sales/a", "sales/b"]);
        assert!(doc.contains("<IsTruncated>false</IsTruncated>"));
        let page = render("lake", &params(&[("prefix", "sales/"), ("max-uploads", "1")]), &all);
        assert_eq!(keys(&page), ["sales/a"]);
        assert!(page.contains("<IsTruncated>true</IsTruncated><") && page.contains("<NextKeyMarker>sales/a<"));
        let next = render("lake", &params(&[("prefix", "sales/"), ("key-marker", "sales/a")]), &all);
        assert_eq!(keys(&next), ["sales/b"]);
    }

    #[test]
    fn the_upload_id_marker_continues_within_a_key() {
        let all = [upload("k", "a", 1), upload("k", "b", 2), upload("l", "c", 3)];
        let doc = render("lake", &params(&[("key-marker", "k"), ("upload-id-marker", "a")]), &all);
        assert_eq!(doc.matches("<UploadId>").count(), 2, "{doc}");
        assert!(doc.contains("<UploadId>b</UploadId>") && doc.contains("<UploadId>c</UploadId>"));
    }

    #[test]
    fn a_delimiter_groups_keys_into_common_prefixes() {
        let all = [upload("sales/2024/a", "1", 1), upload("sales/2024/b", "2", 2), upload("sales/c", "3", 3)];
        let doc = render("lake", &params(&[("prefix", "sales/"), ("delimiter", "/")]), &all);
        assert_eq!(keys(&doc), ["sales/c"]);
        assert_eq!(doc.matches("<CommonPrefixes><Prefix>sales/2024/</Prefix></CommonPrefixes>").count(), 1);
    }

    #[test]
    fn bad_parameters_are_invalid_arguments() {
        let q = |k: &str, v: &str| ListParams::from_query(&[(k.into(), v.into())]);
        assert!(q("max-uploads", "-1").is_err());
        assert!(q("encoding-type", "base64").is_err());
        assert_eq!(q("max-uploads", "5000").unwrap().max_uploads, MAX_UPLOADS);
    }
}
