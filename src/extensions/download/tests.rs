//! The downloader against a loopback HTTP server of the test's own (raw tokio TCP, so it can
//! send what no well-behaved server would: endless bodies, lying lengths, relative redirects).

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::*;

/// Serves one answer per connection, picked by the request's path (query ignored):
/// * `/hop/N`: 302 to the relative `N-1` (so `/hop/N-1`), `/hop/0` is 200 `done`;
/// * `/dir/start`: 301 to `../hop/0?x=1`; `/abs`: 307 to `/hop/1`; `/noloc`: 302, no Location;
/// * `/endless`: 200 with no length, bytes until the client goes;
/// * `/declared`: 200 saying a length over [`MAX_FILE`], then nothing;
/// * anything else: the storage service's 404 `BlobNotFound`.
async fn server() -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move {
        loop {
            let (s, _) = listener.accept().await.unwrap();
            tokio::spawn(answer(s));
        }
    });
    base
}

async fn answer(mut s: tokio::net::TcpStream) {
    let mut head = Vec::new();
    let mut b = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        if s.read(&mut b).await.unwrap_or(0) == 0 {
            return;
        }
        head.push(b[0]);
    }
    let head = String::from_utf8_lossy(&head).to_string();
    let target = head.split_whitespace().nth(1).unwrap_or("/");
    let path = target.split('?').next().unwrap_or("/");
    let redirect = |code: &str, to: &str| {
        format!("HTTP/1.1 {code}\r\nLocation: {to}\r\nContent-Length: 0\r\n\r\n")
    };
    let reply = match path {
        "/hop/0" => "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\ndone".to_string(),
        p if p.starts_with("/hop/") => {
            let n: u32 = p[5..].parse().unwrap();
            redirect("302 Found", &(n - 1).to_string())
        }
        "/dir/start" => redirect("301 Moved Permanently", "../hop/0?x=1"),
        "/abs" => redirect("307 Temporary Redirect", "/hop/1"),
        "/noloc" => "HTTP/1.1 302 Found\r\nContent-Length: 0\r\n\r\n".to_string(),
        "/endless" => {
            let _ = s
                .write_all(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n")
                .await;
            let chunk = vec![b'x'; 64 << 10];
            while s.write_all(&chunk).await.is_ok() {}
            return;
        }
        "/declared" => {
            let big = MAX_FILE + 1;
            let _ = s
                .write_all(format!("HTTP/1.1 200 OK\r\nContent-Length: {big}\r\n\r\n").as_bytes())
                .await;
            // Nothing more: a client that waited for the body would time out.
            std::future::pending::<()>().await;
            return;
        }
        _ => {
            let body = "<?xml version=\"1.0\" encoding=\"utf-8\"?><Error><Code>BlobNotFound</Code>\
                <Message>The specified blob does not exist.\nRequestId:1</Message></Error>";
            format!(
                "HTTP/1.1 404 The specified blob does not exist.\r\nContent-Length: {}\r\n\r\n{body}",
                body.len()
            )
        }
    };
    let _ = s.write_all(reply.as_bytes()).await;
}

#[tokio::test]
async fn relative_redirects_are_resolved_against_the_url_that_gave_them() {
    let base = server().await;
    for start in ["/dir/start", "/abs", "/hop/5"] {
        let got = fetch(&format!("{base}{start}")).await;
        assert_eq!(got.unwrap(), b"done", "{start}");
    }
}

#[tokio::test]
async fn a_sixth_redirect_is_refused_with_the_chain() {
    let base = server().await;
    let e = fetch(&format!("{base}/hop/6")).await.unwrap_err();
    let DownloadError::Redirects { chain } = &e else {
        panic!("{e}");
    };
    let want: Vec<String> = (0..=6).rev().map(|n| format!("{base}/hop/{n}")).collect();
    assert_eq!(chain, &want);
    let text = e.to_string();
    assert!(text.starts_with("more than 5 redirects: "), "{text}");
    assert!(
        text.contains(&format!("{base}/hop/6 -> {base}/hop/5")),
        "{text}"
    );
    assert_eq!(e.code(), "TooManyRedirects");

    let e = fetch(&format!("{base}/noloc")).await.unwrap_err();
    assert!(
        matches!(e, DownloadError::BadRedirect { status: 302, .. }),
        "{e}"
    );
    assert!(e.to_string().contains(&format!("{base}/noloc")), "{e}");
}

#[tokio::test]
async fn a_file_over_the_cap_is_refused_while_it_streams() {
    let base = server().await;
    // An endless body: refused once past the cap (a client that read it all would never end).
    let e = fetch(&format!("{base}/endless")).await.unwrap_err();
    assert!(
        matches!(&e, DownloadError::TooLarge { url } if url == &format!("{base}/endless")),
        "{e}"
    );
    assert!(e.to_string().contains("larger than 64 MiB"), "{e}");
    // A length over the cap: refused from the head, before any of the body.
    let e = fetch(&format!("{base}/declared")).await.unwrap_err();
    assert!(matches!(e, DownloadError::TooLarge { .. }), "{e}");
    assert_eq!(e.code(), "FileTooLarge");
}

#[tokio::test]
async fn an_error_answer_names_the_url_and_the_status() {
    let base = server().await;
    let e = fetch(&format!("{base}/c/missing.sh?sv=1&sig=SECRET"))
        .await
        .unwrap_err();
    let text = e.to_string();
    let url = format!("{base}/c/missing.sh?sv=1&sig=REDACTED");
    assert_eq!(
        text,
        format!("GET {url} answered 404 BlobNotFound: The specified blob does not exist.")
    );
    assert_eq!((e.status(), e.code().as_str()), (Some(404), "BlobNotFound"));
}

#[test]
fn urls_parse_name_and_redact() {
    let u = "http://127.0.0.1:7481/acct/scripts/dir%2Fx/script.sh?sv=1&se=2020-01-01T00%3A00%3A00Z&sig=abc%2B%3D";
    assert_eq!(file_name(u), "script.sh");
    assert_eq!(url_path(u), "/acct/scripts/dir%2Fx/script.sh");
    let r = redact(u);
    assert!(r.contains("sig=REDACTED") && !r.contains("abc"), "{r}");
    assert!(r.contains("se=2020-01-01"));
    assert_eq!(url_path("http://h:8080?x=1"), "/");
    assert_eq!(file_name("http://h/"), "download");
    for bad in ["ftp://h/x", "http://", "file:///etc/passwd", "h/x"] {
        let e = parse(bad).unwrap_err();
        assert!(
            matches!(&e, DownloadError::BadUrl { url } if url == bad),
            "{bad}: {e}"
        );
    }
}
