//! A minimal keep-alive HTTP/1.1 client, enough to scrape an exporter many times without
//! measuring a client library.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use anyhow::{Context as _, Result, bail};

pub(crate) struct Scraper {
    reader: BufReader<TcpStream>,
    request: Vec<u8>,
}

/// What Prometheus 2.x sends, so both exporters do the work they do in production.
const ACCEPT: &str = "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1";

impl Scraper {
    pub(crate) fn connect(addr: SocketAddr, path: &str) -> Result<Self> {
        let stream = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
        stream.set_nodelay(true)?;
        stream.set_read_timeout(Some(Duration::from_secs(10)))?;
        let request = format!(
            "GET {path} HTTP/1.1\r\nHost: {addr}\r\nAccept: {ACCEPT}\r\nAccept-Encoding: gzip\r\nX-Prometheus-Scrape-Timeout-Seconds: 10\r\nUser-Agent: xtask-bench\r\n\r\n"
        )
        .into_bytes();
        Ok(Self {
            reader: BufReader::new(stream),
            request,
        })
    }

    /// Sends one request and reads the whole response; returns the body size in bytes.
    pub(crate) fn scrape(&mut self) -> Result<usize> {
        self.reader.get_mut().write_all(&self.request)?;
        let mut line = String::new();
        self.reader.read_line(&mut line)?;
        if !line.starts_with("HTTP/1.1 200") {
            bail!("unexpected status line {line:?}");
        }
        let mut length = None;
        let mut chunked = false;
        loop {
            line.clear();
            self.reader.read_line(&mut line)?;
            let header = line.trim_end();
            if header.is_empty() {
                break;
            }
            let (name, value) = header.split_once(':').unwrap_or((header, ""));
            if name.eq_ignore_ascii_case("content-length") {
                length = Some(value.trim().parse::<usize>().context("content-length")?);
            } else if name.eq_ignore_ascii_case("transfer-encoding")
                && value.trim().eq_ignore_ascii_case("chunked")
            {
                chunked = true;
            }
        }
        if chunked {
            let mut total = 0;
            loop {
                line.clear();
                self.reader.read_line(&mut line)?;
                let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                    .context("chunk size")?;
                let mut chunk = vec![0; size + 2];
                self.reader.read_exact(&mut chunk)?;
                if size == 0 {
                    return Ok(total);
                }
                total += size;
            }
        }
        let length = length.context("response has neither Content-Length nor chunked encoding")?;
        let mut body = vec![0; length];
        self.reader.read_exact(&mut body)?;
        Ok(length)
    }
}
