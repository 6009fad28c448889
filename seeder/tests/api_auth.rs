//! The seeder's operator routes (`/api/egress`, `/api/ledger`, `/metrics`)
//! need the API token, and the ledger export is streamed page by page with
//! spreadsheet formulas neutralised.

use std::time::Duration;

use reqwest::{header, StatusCode};

use ota_proto::InfoHash;
use ota_seeder::http_path::HttpSettings;
use ota_seeder::ledger::{EgressEntry, EgressPath, EXPORT_PAGE_ROWS};
use ota_testkit::stack::{serve_http, serve_http_with, Stack, ADMIN};

const ROUTES: [&str; 4] = ["/api/egress", "/api/ledger", "/api/ledger?format=csv", "/metrics"];

fn client() -> reqwest::Client {
    reqwest::Client::builder()
        .timeout(Duration::from_secs(20))
        .build()
        .unwrap()
}

async fn listener() -> (tokio::net::TcpListener, String) {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let base = format!("http://{}", l.local_addr().unwrap());
    (l, base)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn egress_ledger_and_metrics_need_the_api_token() {
    let stack = Stack::start().await;
    let seeder = stack.start_seeder(stack.seed_settings()).await;
    let (l, base) = listener().await;
    let server = serve_http(seeder.clone(), l);
    let c = client();
    for route in ROUTES {
        let r = c.get(format!("{base}{route}")).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{route} without a token");
        assert_eq!(r.headers()[header::WWW_AUTHENTICATE], "Bearer");
        for wrong in ["wrong-token", &ADMIN[..ADMIN.len() - 1], ""] {
            let r = c.get(format!("{base}{route}")).bearer_auth(wrong).send().await.unwrap();
            assert_eq!(r.status(), StatusCode::UNAUTHORIZED, "{route} with {wrong:?}");
        }
        let r = c.get(format!("{base}{route}")).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{route} with the API token");
    }
    // Health stays public.
    assert_eq!(
        c.get(format!("{base}/health")).send().await.unwrap().status(),
        StatusCode::OK
    );
    server.abort();

    // No API token configured: the routes are off, whatever is sent.
    let (l, base) = listener().await;
    let server = serve_http_with(seeder.clone(), l, HttpSettings::new(None));
    for route in ROUTES {
        let r = c.get(format!("{base}{route}")).bearer_auth(ADMIN).send().await.unwrap();
        assert_eq!(
            r.status(),
            StatusCode::SERVICE_UNAVAILABLE,
            "{route} with no API token configured"
        );
    }
    server.abort();
    let (l, base) = listener().await;
    let server = serve_http_with(seeder.clone(), l, HttpSettings::new(Some(String::new())));
    let r = c.get(format!("{base}/metrics")).bearer_auth("").send().await.unwrap();
    assert_eq!(
        r.status(),
        StatusCode::SERVICE_UNAVAILABLE,
        "an empty API token is none"
    );
    server.abort();
    seeder.stop().await;
    stack.shutdown().await;
}

/// Rows 0..n, each in its own (release, path, peer, second), so none aggregate.
fn rows(n: usize) -> Vec<EgressEntry> {
    (0..n)
        .map(|i| EgressEntry {
            at_ms: 1_700_000_000_000 + i as i64 * 1000,
            info_hash: InfoHash([0x5a; 20]),
            path: EgressPath::Bittorrent,
            peer: format!("10.0.{}.{}:6881", i / 256, i % 256),
            device: None,
            bytes: 1,
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_export_is_streamed_in_pages_not_loaded_whole() {
    let stack = Stack::start().await;
    let seeder = stack.start_seeder(stack.seed_settings()).await;
    let n = EXPORT_PAGE_ROWS as usize * 3 + 7;
    seeder.ledger().record(&rows(n)).await.unwrap();

    // The store reads pages of at most EXPORT_PAGE_ROWS rows.
    let first = seeder.ledger().page(0, EXPORT_PAGE_ROWS).await.unwrap();
    assert_eq!(first.len(), EXPORT_PAGE_ROWS as usize);
    let last_id = first.last().unwrap().0;
    let second = seeder.ledger().page(last_id, EXPORT_PAGE_ROWS).await.unwrap();
    assert!(second[0].0 > last_id, "keyset pagination goes on after the last id");

    let (l, base) = listener().await;
    let server = serve_http(seeder.clone(), l);
    let c = client();
    for (q, lines) in [("?format=csv", n + 1), ("", n + 1)] {
        let mut r = c
            .get(format!("{base}/api/ledger{q}"))
            .bearer_auth(ADMIN)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
        // A body built whole would carry its length; a streamed one is chunked.
        assert!(
            r.headers().get(header::CONTENT_LENGTH).is_none(),
            "{q}: streamed, not buffered: {:?}",
            r.headers()
        );
        assert_eq!(r.headers()[header::TRANSFER_ENCODING], "chunked");
        let mut body = Vec::new();
        let mut chunks = 0;
        while let Some(chunk) = r.chunk().await.unwrap() {
            body.extend_from_slice(&chunk);
            chunks += 1;
        }
        assert!(
            chunks >= 4,
            "{q}: {n} rows in pages of {EXPORT_PAGE_ROWS}: {chunks} chunks"
        );
        let text = String::from_utf8(body).unwrap();
        assert_eq!(text.lines().count(), lines, "{q}");
        if q.is_empty() {
            let v: Vec<EgressEntry> = serde_json::from_str(&text).unwrap();
            assert_eq!(v, rows(n));
        }
    }
    server.abort();
    seeder.stop().await;
    stack.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ledger_csv_neutralises_cells_that_spreadsheets_would_run_as_formulas() {
    let stack = Stack::start().await;
    let seeder = stack.start_seeder(stack.seed_settings()).await;
    let hostile = [
        "=HYPERLINK(\"http://evil/\",\"x\")",
        "+1+cmd|' /C calc'!A0",
        "-2+3",
        "@SUM(A1:A9)",
        "\tTAB",
        "\rCR",
    ];
    let entries: Vec<EgressEntry> = hostile
        .iter()
        .enumerate()
        .map(|(i, d)| EgressEntry {
            at_ms: 1_700_000_000_000,
            info_hash: InfoHash([0x11; 20]),
            path: EgressPath::Http,
            peer: if i == 0 {
                "=1+1".into()
            } else {
                format!("127.0.0.1:{}", 1000 + i)
            },
            device: Some((*d).into()),
            bytes: 10,
        })
        .collect();
    seeder.ledger().record(&entries).await.unwrap();
    let (l, base) = listener().await;
    let server = serve_http(seeder.clone(), l);
    let csv = ota_testkit::http::get_text(&format!("{base}/api/ledger?format=csv"), ADMIN).await;
    // Parse the cells (RFC 4180 quoting) and look at the peer and device ones.
    let cells = parse_csv(&csv);
    assert_eq!(cells[0], ["at_ms", "info_hash", "path", "peer", "device", "bytes"]);
    assert_eq!(cells.len(), hostile.len() + 1, "{csv:?}");
    for row in &cells[1..] {
        for cell in [&row[3], &row[4]] {
            assert!(
                !cell.starts_with(['=', '+', '-', '@', '\t', '\r']),
                "cell {cell:?} would run as a formula in:\n{csv}"
            );
        }
    }
    assert_eq!(cells[1][3], "'=1+1");
    let devices: Vec<&str> = cells[1..].iter().map(|r| r[4].as_str()).collect();
    let expected: Vec<String> = hostile.iter().map(|d| format!("'{d}")).collect();
    assert_eq!(devices, expected, "the text is kept, behind a quote");
    // Plain values are untouched.
    assert_eq!(cells[2][3], "127.0.0.1:1001");
    server.abort();
    seeder.stop().await;
    stack.shutdown().await;
}

/// Splits RFC 4180 CSV into rows of cells (quoted cells may hold commas,
/// doubled quotes and line breaks).
fn parse_csv(s: &str) -> Vec<Vec<String>> {
    let (mut rows, mut row, mut cell) = (Vec::new(), Vec::new(), String::new());
    let mut chars = s.chars().peekable();
    let mut quoted = false;
    while let Some(ch) = chars.next() {
        match (quoted, ch) {
            (true, '"') if chars.peek() == Some(&'"') => {
                chars.next();
                cell.push('"');
            }
            (true, '"') => quoted = false,
            (true, c) => cell.push(c),
            (false, '"') if cell.is_empty() => quoted = true,
            (false, ',') => row.push(std::mem::take(&mut cell)),
            (false, '\n') => {
                row.push(std::mem::take(&mut cell));
                rows.push(std::mem::take(&mut row));
            }
            (false, c) => cell.push(c),
        }
    }
    rows
}
