//! The XML Lakegate writes (errors, ListBuckets, DeleteObjects results, STS and S3 Control answers) and the
//! little it reads (DeleteObjects requests, the store's ListBuckets and DeleteObjects answers), bounded.

use quick_xml::Reader;
use quick_xml::events::Event;

/// S3's namespace.
pub const S3_NS: &str = "http://s3.amazonaws.com/doc/2006-03-01/";
/// Most objects one DeleteObjects request may name (S3's limit).
pub const MAX_DELETE_OBJECTS: usize = 1000;
/// Deepest element nesting accepted in any XML Lakegate reads.
const MAX_DEPTH: usize = 8;

/// Escapes text for element content and attribute values.
pub fn escape(text: &str) -> String {
    quick_xml::escape::escape(text).into_owned()
}

/// An S3 error document.
pub fn s3_error(code: &str, message: &str, resource: &str, request_id: &str) -> String {
    format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{}</Code><Message>{}</Message><Resource>{}</Resource>\
         <RequestId>{}</RequestId></Error>",
        escape(code),
        escape(message),
        escape(resource),
        escape(request_id)
    )
}

/// Why an XML document was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum XmlError {
    #[error("the XML is not well formed or not the expected document")]
    Malformed,
    #[error("the document names more than {MAX_DELETE_OBJECTS} objects")]
    TooManyObjects,
    #[error("object versions are not supported")]
    VersionsNotSupported,
}

/// A DeleteObjects request body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeleteRequest {
    pub keys: Vec<String>,
    pub quiet: bool,
}

/// Reads the text of leaf elements along their element path, e.g. `["Delete", "Object", "Key"]`.
pub fn leaves(xml: &[u8], mut on_leaf: impl FnMut(&[String], String) -> Result<(), XmlError>) -> Result<(), XmlError> {
    let mut reader = Reader::from_reader(xml);
    let mut path: Vec<String> = Vec::new();
    let mut text = String::new();
    loop {
        match reader.read_event().map_err(|_| XmlError::Malformed)? {
            Event::Start(e) => {
                if path.len() >= MAX_DEPTH {
                    return Err(XmlError::Malformed);
                }
                let name = std::str::from_utf8(e.local_name().as_ref()).map_err(|_| XmlError::Malformed)?.to_owned();
                path.push(name);
                text.clear();
            }
            Event::Text(t) => text.push_str(&t.decode().map_err(|_| XmlError::Malformed)?),
            Event::CData(t) => text.push_str(&t.decode().map_err(|_| XmlError::Malformed)?),
            Event::GeneralRef(r) => {
                if let Some(c) = r.resolve_char_ref().map_err(|_| XmlError::Malformed)? {
                    text.push(c);
                } else {
                    let name = r.decode().map_err(|_| XmlError::Malformed)?;
                    let entity = format!("&{name};");
                    let resolved = quick_xml::escape::unescape(&entity).map_err(|_| XmlError::Malformed)?;
                    text.push_str(&resolved);
                }
            }
            Event::End(_) => {
                on_leaf(&path, std::mem::take(&mut text))?;
                path.pop();
            }
            Event::Eof => break,
            // Declarations, comments, processing instructions carry nothing we read; DTDs are refused
            // (no entity tricks).
            Event::DocType(_) => return Err(XmlError::Malformed),
            Event::Empty(_) | Event::Decl(_) | Event::Comment(_) | Event::PI(_) => {}
        }
    }
    if path.is_empty() { Ok(()) } else { Err(XmlError::Malformed) }
}

/// Parses a DeleteObjects request body (already bounded in size by the caller).
pub fn parse_delete(xml: &[u8]) -> Result<DeleteRequest, XmlError> {
    let mut keys = Vec::new();
    let mut quiet = false;
    let mut root_seen = false;
    leaves(xml, |path, text| {
        match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["Delete", "Object", "Key"] => {
                if keys.len() >= MAX_DELETE_OBJECTS {
                    return Err(XmlError::TooManyObjects);
                }
                keys.push(text);
            }
            ["Delete", "Object", "VersionId"] => return Err(XmlError::VersionsNotSupported),
            ["Delete", "Quiet"] => quiet = text.trim() == "true",
            ["Delete"] => root_seen = true,
            ["Delete", "Object"] => {}
            ["Delete", "Object", "ETag" | "LastModifiedTime" | "Size"] => {}
            _ => return Err(XmlError::Malformed),
        }
        Ok(())
    })?;
    if !root_seen || keys.is_empty() {
        return Err(XmlError::Malformed);
    }
    Ok(DeleteRequest { keys, quiet })
}

/// The DeleteObjects body forwarded to the store: only the allowed keys.
pub fn delete_body(keys: &[String], quiet: bool) -> String {
    let mut out = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Delete xmlns=\"{S3_NS}\">");
    for key in keys {
        out.push_str("<Object><Key>");
        out.push_str(&escape(key));
        out.push_str("</Key></Object>");
    }
    out.push_str(if quiet { "<Quiet>true</Quiet>" } else { "<Quiet>false</Quiet>" });
    out.push_str("</Delete>");
    out
}

/// One entry of a DeleteObjects result.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeleteOutcome {
    Deleted(String),
    Error { key: String, code: String, message: String },
}

/// Reads the store's DeleteObjects result.
pub fn parse_delete_result(xml: &[u8]) -> Result<Vec<DeleteOutcome>, XmlError> {
    let mut out = Vec::new();
    let (mut key, mut code, mut message) = (String::new(), String::new(), String::new());
    leaves(xml, |path, text| {
        match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["DeleteResult", "Deleted" | "Error", "Key"] => key = text,
            ["DeleteResult", "Error", "Code"] => code = text,
            ["DeleteResult", "Error", "Message"] => message = text,
            ["DeleteResult", "Deleted"] => out.push(DeleteOutcome::Deleted(std::mem::take(&mut key))),
            ["DeleteResult", "Error"] => out.push(DeleteOutcome::Error {
                key: std::mem::take(&mut key),
                code: std::mem::take(&mut code),
                message: std::mem::take(&mut message),
            }),
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

/// The DeleteObjects result sent to the client.
pub fn delete_result(outcomes: &[DeleteOutcome], quiet: bool) -> String {
    let mut out = format!("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<DeleteResult xmlns=\"{S3_NS}\">");
    for o in outcomes {
        match o {
            DeleteOutcome::Deleted(key) if !quiet => {
                out.push_str(&format!("<Deleted><Key>{}</Key></Deleted>", escape(key)));
            }
            DeleteOutcome::Deleted(_) => {}
            DeleteOutcome::Error { key, code, message } => out.push_str(&format!(
                "<Error><Key>{}</Key><Code>{}</Code><Message>{}</Message></Error>",
                escape(key),
                escape(code),
                escape(message)
            )),
        }
    }
    out.push_str("</DeleteResult>");
    out
}

/// A bucket of a ListBuckets answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BucketEntry {
    pub name: String,
    pub creation_date: String,
}

/// Reads the store's ListBuckets answer.
pub fn parse_list_buckets(xml: &[u8]) -> Result<Vec<BucketEntry>, XmlError> {
    let mut out = Vec::new();
    let (mut name, mut date) = (String::new(), String::new());
    leaves(xml, |path, text| {
        match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["ListAllMyBucketsResult", "Buckets", "Bucket", "Name"] => name = text,
            ["ListAllMyBucketsResult", "Buckets", "Bucket", "CreationDate"] => date = text,
            ["ListAllMyBucketsResult", "Buckets", "Bucket"] => {
                out.push(BucketEntry { name: std::mem::take(&mut name), creation_date: std::mem::take(&mut date) })
            }
            _ => {}
        }
        Ok(())
    })?;
    Ok(out)
}

/// The ListBuckets answer sent to the client.
pub fn list_buckets(buckets: &[BucketEntry], owner: &str) -> String {
    let mut out = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<ListAllMyBucketsResult xmlns=\"{S3_NS}\"><Owner><ID>{0}</ID>\
         <DisplayName>{0}</DisplayName></Owner><Buckets>",
        escape(owner)
    );
    for b in buckets {
        out.push_str(&format!(
            "<Bucket><Name>{}</Name><CreationDate>{}</CreationDate></Bucket>",
            escape(&b.name),
            escape(&b.creation_date)
        ));
    }
    out.push_str("</Buckets></ListAllMyBucketsResult>");
    out
}

/// Reads `Code` and `Message` of a store's S3 error document, so the client gets the store's error.
pub fn parse_error(xml: &[u8]) -> Option<(String, String)> {
    let (mut code, mut message) = (None, String::new());
    leaves(xml, |path, text| {
        match path.iter().map(String::as_str).collect::<Vec<_>>().as_slice() {
            ["Error", "Code"] => code = Some(text),
            ["Error", "Message"] => message = text,
            _ => {}
        }
        Ok(())
    })
    .ok()?;
    code.map(|c| (c, message))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, clippy::expect_used)]

    use super::*;

    #[test]
    fn delete_requests_read_keys_with_entities_and_refuse_versions() {
        let body = br#"<?xml version="1.0"?><Delete xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
            <Object><Key>sales/a&amp;b</Key></Object><Object><Key>hr/&#x78;</Key></Object><Quiet>true</Quiet></Delete>"#;
        let d = parse_delete(body).unwrap();
        assert_eq!(d.keys, vec!["sales/a&b".to_owned(), "hr/x".to_owned()]);
        assert!(d.quiet);
        let v = b"<Delete><Object><Key>a</Key><VersionId>1</VersionId></Object></Delete>";
        assert_eq!(parse_delete(v), Err(XmlError::VersionsNotSupported));
        assert_eq!(parse_delete(b"<Delete><Object><Key>a</Key></Object>"), Err(XmlError::Malformed));
        assert!(
            parse_delete(b"<!DOCTYPE x [<!ENTITY e \"y\">]><Delete><Object><Key>&e;</Key></Object></Delete>").is_err()
        );
    }

    #[test]
    fn generated_documents_escape_client_text() {
        let x = s3_error("AccessDenied", "no <way>", "/lake/a&b", "id");
        assert!(x.contains("no &lt;way&gt;") && x.contains("/lake/a&amp;b"), "{x}");
        let body = delete_body(&["a<b".into()], false);
        assert_eq!(parse_delete(body.as_bytes()).unwrap().keys, vec!["a<b".to_owned()]);
    }

    #[test]
    fn list_buckets_round_trips() {
        let b = vec![BucketEntry { name: "lake".into(), creation_date: "2026-01-01T00:00:00.000Z".into() }];
        assert_eq!(parse_list_buckets(list_buckets(&b, "alice").as_bytes()).unwrap(), b);
    }
}
