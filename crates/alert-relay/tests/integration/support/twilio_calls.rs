//! A loopback fake of Twilio's Calls API that then plays the call against the relay as Twilio
//! does: it fetches the TwiML from the call's `Url`, posts the key presses to the `<Gather>`'s
//! `action` and the call's end to its `StatusCallback`, every request form-encoded and signed
//! (`X-Twilio-Signature`) with the account's auth token over the full URL and the sorted
//! parameters.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt as _, Full};
use hyper::server::conn::http1;
use hyper_util::rt::TokioIo;

use super::client;

/// What the person (or machine) at a number does when called.
#[derive(Debug, Clone)]
pub(crate) enum Pickup {
    /// Answers and presses these keys, one per menu played.
    Answer(Vec<&'static str>),
    /// Rings out: `CallStatus=no-answer`.
    NoAnswer,
    /// `CallStatus=busy`.
    Busy,
    /// A voicemail answers (answering-machine detection: `AnsweredBy=machine_end_beep`).
    Voicemail,
}

/// One request the fake made to the relay, as sent, and the relay's answer.
#[derive(Debug, Clone)]
pub(crate) struct Callback {
    pub(crate) url: String,
    pub(crate) params: Vec<(String, String)>,
    pub(crate) signature: String,
    pub(crate) status: u16,
    pub(crate) body: String,
}

/// One call the relay asked for.
#[derive(Debug, Clone)]
pub(crate) struct Call {
    pub(crate) sid: String,
    /// The Calls API request's form.
    pub(crate) form: Vec<(String, String)>,
    pub(crate) callbacks: Vec<Callback>,
    pub(crate) done: bool,
}

impl Call {
    pub(crate) fn value(&self, key: &str) -> String {
        self.form
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .unwrap_or_default()
    }
}

struct State {
    token: String,
    /// By number called, in order; [`Pickup::Answer`] with no key when none is left.
    pickups: Vec<(String, VecDeque<Pickup>)>,
    calls: Vec<Call>,
}

/// The fake Calls API; `url()` is the channel's `api_url`.
#[derive(Clone)]
pub(crate) struct FakeCalls {
    pub(crate) addr: SocketAddr,
    state: Arc<Mutex<State>>,
}

impl FakeCalls {
    pub(crate) async fn start(token: &str) -> FakeCalls {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let state = Arc::new(Mutex::new(State {
            token: token.to_owned(),
            pickups: Vec::new(),
            calls: Vec::new(),
        }));
        let fake = FakeCalls { addr, state };
        let f = fake.clone();
        tokio::spawn(async move {
            loop {
                let Ok((stream, _)) = listener.accept().await else {
                    return;
                };
                let f = f.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(
                        move |req: http::Request<hyper::body::Incoming>| {
                            let f = f.clone();
                            async move { Ok::<_, std::convert::Infallible>(f.create(req).await) }
                        },
                    );
                    let _ = http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        fake
    }

    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// What `number` does on its next calls, in order.
    pub(crate) fn pickup(&self, number: &str, pickups: impl IntoIterator<Item = Pickup>) {
        let mut st = self.state.lock().expect("state");
        st.pickups
            .push((number.to_owned(), pickups.into_iter().collect()));
    }

    pub(crate) fn calls(&self) -> Vec<Call> {
        self.state.lock().expect("state").calls.clone()
    }

    /// Waits until `n` calls have been played to their end, or panics after `timeout`.
    pub(crate) async fn wait_done(&self, n: usize, timeout: Duration) -> Vec<Call> {
        let deadline = Instant::now() + timeout;
        loop {
            let calls = self.calls();
            if calls.iter().filter(|c| c.done).count() >= n {
                return calls;
            }
            assert!(
                Instant::now() < deadline,
                "{n} calls not played within {timeout:?}: {calls:#?}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// `POST /2010-04-01/Accounts/{sid}/Calls.json`: 201 with the new call's SID, then the
    /// call is played in the background.
    async fn create(
        &self,
        req: http::Request<hyper::body::Incoming>,
    ) -> http::Response<Full<Bytes>> {
        let path = req.uri().path().to_owned();
        let body = req
            .into_body()
            .collect()
            .await
            .map(|c| c.to_bytes())
            .unwrap_or_default();
        let form = alert_relay::inbound::parse_form(&body);
        if !path.ends_with("/Calls.json") {
            return reply(404, r#"{"code":20404,"message":"not found"}"#);
        }
        let sid = {
            let mut st = self.state.lock().expect("state");
            let sid = format!("CA{:032}", st.calls.len() + 1);
            st.calls.push(Call {
                sid: sid.clone(),
                form: form.clone(),
                callbacks: Vec::new(),
                done: false,
            });
            sid
        };
        let f = self.clone();
        let call_sid = sid.clone();
        tokio::spawn(async move { f.play(&call_sid).await });
        reply(201, &format!(r#"{{"sid":"{sid}","status":"queued"}}"#))
    }

    /// Plays call `sid` the way its number's next [`Pickup`] says.
    async fn play(&self, sid: &str) {
        // Twilio dials, the phone rings: the relay has recorded the call's SID long before.
        tokio::time::sleep(Duration::from_millis(300)).await;
        let call = self
            .calls()
            .into_iter()
            .find(|c| c.sid == sid)
            .expect("call");
        let to = call.value("To");
        let pickup = {
            let mut st = self.state.lock().expect("state");
            st.pickups
                .iter_mut()
                .find(|(n, _)| *n == to)
                .and_then(|(_, q)| q.pop_front())
                .unwrap_or(Pickup::Answer(Vec::new()))
        };
        let from = call.value("From");
        let base = |extra: &[(&str, &str)]| -> Vec<(String, String)> {
            let fixed = [
                ("AccountSid", "AC1"),
                ("CallSid", sid),
                ("From", from.as_str()),
                ("To", to.as_str()),
                ("Direction", "outbound-api"),
            ];
            fixed
                .iter()
                .chain(extra)
                .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
                .collect()
        };
        let status_url = call.value("StatusCallback");
        match pickup {
            Pickup::NoAnswer | Pickup::Busy => {
                let status = if matches!(pickup, Pickup::Busy) {
                    "busy"
                } else {
                    "no-answer"
                };
                self.send(sid, &status_url, base(&[("CallStatus", status)]))
                    .await;
            }
            Pickup::Voicemail => {
                let machine = [
                    ("CallStatus", "in-progress"),
                    ("AnsweredBy", "machine_end_beep"),
                ];
                self.send(sid, &call.value("Url"), base(&machine)).await;
                let end = [
                    ("CallStatus", "completed"),
                    ("AnsweredBy", "machine_end_beep"),
                ];
                self.send(sid, &status_url, base(&end)).await;
            }
            Pickup::Answer(keys) => {
                let human = [("CallStatus", "in-progress"), ("AnsweredBy", "human")];
                let mut twiml = self.send(sid, &call.value("Url"), base(&human)).await;
                for key in keys {
                    let Some(action) = gather_action(&twiml) else {
                        break;
                    };
                    let press = [("CallStatus", "in-progress"), ("Digits", key)];
                    twiml = self.send(sid, &action, base(&press)).await;
                }
                self.send(sid, &status_url, base(&[("CallStatus", "completed")]))
                    .await;
            }
        }
        let mut st = self.state.lock().expect("state");
        if let Some(c) = st.calls.iter_mut().find(|c| c.sid == sid) {
            c.done = true;
        }
    }

    /// Posts `params` to `url`, signed as Twilio signs; the answer's body.
    async fn send(&self, sid: &str, url: &str, params: Vec<(String, String)>) -> String {
        let token = self.state.lock().expect("state").token.clone();
        let callback = post_signed(url, &token, params).await;
        let body = callback.body.clone();
        let mut st = self.state.lock().expect("state");
        if let Some(c) = st.calls.iter_mut().find(|c| c.sid == sid) {
            c.callbacks.push(callback);
        }
        body
    }
}

/// Posts `params` form-encoded to `url` with the signature `token` gives them.
pub(crate) async fn post_signed(url: &str, token: &str, params: Vec<(String, String)>) -> Callback {
    let signature = alert_relay::channels::twilio::signature(token, url, &params);
    send_as_signed(url, params, signature).await
}

/// Posts `params` to `url` with `signature` as `X-Twilio-Signature`, whatever it signs.
pub(crate) async fn send_as_signed(
    url: &str,
    params: Vec<(String, String)>,
    signature: String,
) -> Callback {
    let r = client()
        .post(url)
        .header("x-twilio-signature", &signature)
        .form(&params)
        .send()
        .await
        .expect("callback");
    let status = r.status().as_u16();
    Callback {
        url: url.to_owned(),
        params,
        signature,
        status,
        body: r.text().await.unwrap_or_default(),
    }
}

/// The `action` of the TwiML's `<Gather>`, unescaped.
pub(crate) fn gather_action(twiml: &str) -> Option<String> {
    let at = twiml.find("<Gather ")?;
    let rest = &twiml[at..];
    let start = rest.find("action=\"")? + "action=\"".len();
    let end = rest[start..].find('"')?;
    Some(
        rest[start..start + end]
            .replace("&quot;", "\"")
            .replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&amp;", "&"),
    )
}

fn reply(status: u16, body: &str) -> http::Response<Full<Bytes>> {
    let mut r = http::Response::new(Full::new(Bytes::from(body.to_owned())));
    *r.status_mut() = http::StatusCode::from_u16(status).expect("status");
    r.headers_mut().insert(
        http::header::CONTENT_TYPE,
        http::HeaderValue::from_static("application/json"),
    );
    r
}
