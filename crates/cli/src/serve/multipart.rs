//! Just enough of `multipart/form-data` (RFC 7578) to take one uploaded file out of a body that
//! is already in memory: the boundary from the content type, then the one part whose
//! `Content-Disposition` has a `filename` (or failing that, the first part named `file`); a
//! form with two or more files is refused rather than half answered.
//! Parts are located by byte search, so binary content is never copied or re-encoded.

use std::ops::Range;

/// One file part: where its content lies in the body, and its file name if the client sent one.
#[derive(Debug, PartialEq)]
pub struct FilePart {
    /// Byte range of the part's content inside the body.
    pub range: Range<usize>,
    /// The `filename` parameter of its `Content-Disposition`.
    pub filename: Option<String>,
}

/// The `boundary` parameter of a `multipart/form-data` content type (quotes removed).
pub fn boundary(content_type: &str) -> Option<String> {
    content_type.split(';').skip(1).find_map(|param| {
        let (key, value) = param.split_once('=')?;
        if !key.trim().eq_ignore_ascii_case("boundary") {
            return None;
        }
        let value = value.trim().trim_matches('"');
        (!value.is_empty() && value.len() <= 200).then(|| value.to_string())
    })
}

fn find(hay: &[u8], needle: &[u8], from: usize) -> Option<usize> {
    if from > hay.len() {
        return None;
    }
    hay[from..]
        .windows(needle.len())
        .position(|w| w == needle)
        .map(|i| i + from)
}

/// A parameter of a `Content-Disposition` header value, e.g. `filename`.
fn disposition_param(value: &str, key: &str) -> Option<String> {
    value.split(';').skip(1).find_map(|param| {
        let (k, v) = param.split_once('=')?;
        k.trim()
            .eq_ignore_ascii_case(key)
            .then(|| v.trim().trim_matches('"').to_string())
    })
}

/// The file part of `body`; the error says what is missing, or that there are several.
pub fn first_file(body: &[u8], boundary: &str) -> Result<FilePart, String> {
    let delimiter = format!("--{boundary}");
    let next_delimiter = format!("\r\n--{boundary}");
    let mut pos = find(body, delimiter.as_bytes(), 0)
        .ok_or("multipart body without its boundary")?
        + delimiter.len();
    let mut named_file = None;
    let mut files = Vec::new();
    loop {
        // After a delimiter: "--" ends the body, otherwise CRLF and the part's headers.
        if body[pos..].starts_with(b"--") {
            break;
        }
        let headers_start = find(body, b"\r\n", pos).ok_or("multipart part without headers")? + 2;
        let headers_end = find(body, b"\r\n\r\n", headers_start - 2)
            .ok_or("multipart part headers not terminated")?;
        // A part with no headers at all has its blank line right after the delimiter.
        let headers = body
            .get(headers_start..headers_end)
            .map(|h| String::from_utf8_lossy(h).into_owned())
            .unwrap_or_default();
        let content_start = headers_end + 4;
        let content_end = find(body, next_delimiter.as_bytes(), content_start)
            .ok_or("multipart part not terminated by the boundary")?;
        let disposition = headers.lines().find_map(|line| {
            let (name, value) = line.split_once(':')?;
            name.trim()
                .eq_ignore_ascii_case("content-disposition")
                .then(|| value.trim().to_string())
        });
        if let Some(d) = disposition {
            let part = FilePart {
                range: content_start..content_end,
                filename: disposition_param(&d, "filename").filter(|f| !f.is_empty()),
            };
            if part.filename.is_some() {
                files.push(part);
                pos = content_end + next_delimiter.len();
                continue;
            }
            if named_file.is_none() && disposition_param(&d, "name").as_deref() == Some("file") {
                named_file = Some(part);
            }
        }
        pos = content_end + next_delimiter.len();
    }
    match files.len() {
        0 => named_file.ok_or_else(|| "multipart body without a file field".to_string()),
        1 => Ok(files.remove(0)),
        n => Err(format!(
            "the form holds {n} files; send one file per request (each answer is about one image)"
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boundary_from_content_type() {
        assert_eq!(
            boundary("multipart/form-data; boundary=----abc").as_deref(),
            Some("----abc")
        );
        assert_eq!(
            boundary("multipart/form-data; charset=x; Boundary=\"q r\"").as_deref(),
            Some("q r")
        );
        assert_eq!(boundary("multipart/form-data"), None);
    }

    #[test]
    fn takes_the_file_part_with_binary_content() {
        let mut body = b"--XY\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhello\r\n--XY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a b.png\"\r\nContent-Type: image/png\r\n\r\n".to_vec();
        let start = body.len();
        body.extend_from_slice(&[0, 255, 13, 10, 45, 45, 1]);
        let end = body.len();
        body.extend_from_slice(b"\r\n--XY--\r\n");
        let part = first_file(&body, "XY").unwrap();
        assert_eq!(part.range, start..end);
        assert_eq!(part.filename.as_deref(), Some("a b.png"));
    }

    #[test]
    fn two_files_are_refused() {
        let body = b"--XY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"a.png\"\r\n\r\nA\r\n--XY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"b.png\"\r\n\r\nB\r\n--XY--\r\n";
        let e = first_file(body, "XY").unwrap_err();
        assert!(e.contains("2 files"), "{e}");
    }

    #[test]
    fn reports_what_is_missing() {
        assert!(first_file(b"no boundary here", "XY").is_err());
        let only_text =
            b"--XY\r\nContent-Disposition: form-data; name=\"note\"\r\n\r\nhi\r\n--XY--\r\n";
        assert_eq!(
            first_file(only_text, "XY").unwrap_err(),
            "multipart body without a file field"
        );
        let cut =
            b"--XY\r\nContent-Disposition: form-data; name=\"file\"; filename=\"x\"\r\n\r\nabc";
        assert!(first_file(cut, "XY").is_err());
        let bare = b"--XY\r\n\r\nabc\r\n--XY--";
        assert!(first_file(bare, "XY").is_err());
    }
}
