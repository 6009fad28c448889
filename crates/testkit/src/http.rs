//! Plain HTTP calls that tests make of the services' operator endpoints.

/// `GET url` with `Authorization: Bearer token` (20 s timeout); the body
/// as text.
///
/// Panics when the request fails or the body is not text (tests only); the
/// status is not checked, so a test asserts on the body.
pub async fn get_text(url: &str, token: &str) -> String {
    reqwest::Client::builder()
        .timeout(std::time::Duration::from_secs(20))
        .build()
        .expect("an HTTP client")
        .get(url)
        .bearer_auth(token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: {e}"))
        .text()
        .await
        .unwrap_or_else(|e| panic!("GET {url}: body: {e}"))
}
