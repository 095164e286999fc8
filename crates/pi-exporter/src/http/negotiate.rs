//! Reading what the scraper asked for from request headers.

use std::time::Duration;

use http::HeaderMap;
use http::header::{ACCEPT, ACCEPT_ENCODING};

/// Whether the `Accept` header ranks OpenMetrics at least as high as the classic text format.
/// Prometheus asks for OpenMetrics first; curl and promtool send no preference and get text.
pub(super) fn prefers_openmetrics(headers: &HeaderMap) -> bool {
    let mut openmetrics = 0.0_f32;
    let mut text = 0.0_f32;
    for value in headers
        .get_all(ACCEPT)
        .iter()
        .filter_map(|v| v.to_str().ok())
    {
        for range in value.split(',') {
            let mut parts = range.split(';').map(str::trim);
            let media = parts.next().unwrap_or_default().to_ascii_lowercase();
            let q = parts
                .filter_map(|p| p.strip_prefix("q="))
                .find_map(|q| q.parse::<f32>().ok())
                .unwrap_or(1.0);
            match media.as_str() {
                "application/openmetrics-text" => openmetrics = openmetrics.max(q),
                "text/plain" | "text/*" | "*/*" => text = text.max(q),
                _ => {}
            }
        }
    }
    openmetrics > 0.0 && openmetrics >= text
}

/// Whether the client takes a gzip-compressed body.
pub(super) fn accepts_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .any(|value| {
            value.split(',').any(|coding| {
                let mut parts = coding.split(';').map(str::trim);
                let name = parts.next().unwrap_or_default();
                let refused = parts.any(|p| matches!(p, "q=0" | "q=0.0" | "q=0.00" | "q=0.000"));
                name.eq_ignore_ascii_case("gzip") && !refused
            })
        })
}

/// Prometheus' scrape timeout (`X-Prometheus-Scrape-Timeout-Seconds`), if sent and sane.
pub(super) fn scrape_timeout(headers: &HeaderMap) -> Option<Duration> {
    let seconds: f64 = headers
        .get("x-prometheus-scrape-timeout-seconds")?
        .to_str()
        .ok()?
        .trim()
        .parse()
        .ok()?;
    (seconds.is_finite() && seconds > 0.0).then(|| Duration::from_secs_f64(seconds.min(3600.0)))
}

#[cfg(test)]
mod tests {
    use super::*;
    use http::HeaderValue;

    fn headers(pairs: &[(&'static str, &'static str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.append(*k, HeaderValue::from_static(v));
        }
        h
    }

    #[test]
    fn prometheus_gets_openmetrics_and_curl_gets_text() {
        let prometheus = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";
        assert!(prefers_openmetrics(&headers(&[("accept", prometheus)])));
        assert!(!prefers_openmetrics(&headers(&[("accept", "*/*")])));
        assert!(!prefers_openmetrics(&headers(&[])));
        assert!(!prefers_openmetrics(&headers(&[(
            "accept",
            "text/plain;version=0.0.4,application/openmetrics-text;q=0.5"
        )])));
        assert!(!prefers_openmetrics(&headers(&[(
            "accept",
            "application/openmetrics-text;q=0"
        )])));
    }

    #[test]
    fn gzip_and_scrape_timeout_headers() {
        assert!(accepts_gzip(&headers(&[("accept-encoding", "gzip")])));
        assert!(accepts_gzip(&headers(&[(
            "accept-encoding",
            "deflate, GZIP;q=0.5"
        )])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "gzip;q=0")])));
        assert!(!accepts_gzip(&headers(&[("accept-encoding", "br")])));
        let h = headers(&[("x-prometheus-scrape-timeout-seconds", "9.5")]);
        assert_eq!(scrape_timeout(&h), Some(Duration::from_millis(9500)));
        for bad in ["-1", "NaN", "soon", "inf", "0"] {
            let h = headers(&[("x-prometheus-scrape-timeout-seconds", bad)]);
            assert_eq!(scrape_timeout(&h), None, "{bad}");
        }
    }
}
