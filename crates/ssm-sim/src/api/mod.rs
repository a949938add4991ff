//! The SSM JSON 1.1 API over HTTP: SigV4-checked, dispatched on `X-Amz-Target`, answered
//! in AWS's shapes (errors as `{"__type", "message"}` with status 400).

pub mod kms;
pub mod run;
pub mod sigv4;
pub mod ssm;
pub mod sts;
pub mod tagging;

use crate::config::Identity;
use crate::iam::{self, Resource};
use crate::state::{lock, SimState};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use std::sync::Arc;
use tokio::net::TcpListener;
use tokio_rustls::TlsAcceptor;

/// Largest request body accepted; SSM requests are small JSON documents.
const MAX_BODY: usize = 1 << 20;

#[derive(Debug)]
pub struct ApiError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl ApiError {
    pub fn new(code: &str, message: impl Into<String>) -> ApiError {
        ApiError {
            status: 400,
            code: code.to_string(),
            message: message.into(),
        }
    }

    pub fn validation(message: impl Into<String>) -> ApiError {
        ApiError::new("ValidationException", message)
    }
}

pub type ApiResult = Result<Value, ApiError>;

pub async fn serve(listener: TcpListener, state: Arc<SimState>, tls: Option<TlsAcceptor>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let state = state.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            // Connection set-up: a round trip for TCP, one more for TLS.
            let trips = if tls.is_some() { 2 } else { 1 };
            tokio::time::sleep(state.config.latency * 2 * trips).await;
            match tls {
                Some(acceptor) => {
                    if let Ok(s) = acceptor.accept(stream).await {
                        serve_io(s, state).await;
                    }
                }
                None => serve_io(stream, state).await,
            }
        });
    }
}

async fn serve_io<I>(io: I, state: Arc<SimState>)
where
    I: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let svc = hyper::service::service_fn(move |req| handle(state.clone(), req));
    let _ = hyper::server::conn::http1::Builder::new()
        .serve_connection(TokioIo::new(io), svc)
        .await;
}

async fn handle(
    state: Arc<SimState>,
    req: Request<Incoming>,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let (parts, body) = req.into_parts();
    // The request's way in; the answer's way out is waited for before returning.
    let latency = state.config.latency;
    tokio::time::sleep(latency).await;
    let response = answer(&state, parts, body).await;
    tokio::time::sleep(latency).await;
    response
}

async fn answer(
    state: &Arc<SimState>,
    parts: hyper::http::request::Parts,
    body: Incoming,
) -> Result<Response<Full<Bytes>>, std::convert::Infallible> {
    let body = match Limited::new(body, MAX_BODY).collect().await {
        Ok(b) => b.to_bytes(),
        Err(_) => {
            return Ok(error_response(&ApiError::validation(
                "Request body is too large or unreadable.",
            )))
        }
    };
    // STS speaks the query protocol: a form body instead of an X-Amz-Target header.
    if parts.headers.get("x-amz-target").is_none() && sts::unsigned(&body) {
        return Ok(
            match sts::assume_role_with_web_identity(&state.config.identity, &body) {
                Ok(xml) => xml_response(200, xml),
                Err(e) => xml_response(e.status, sts::error_body(&e)),
            },
        );
    }
    if parts.headers.get("x-amz-target").is_none() && sts::action(&body).is_some() {
        let result =
            verify(state, &parts, &body, "sts").and_then(|caller| sts::dispatch(caller, &body));
        return Ok(match result {
            Ok(xml) => xml_response(200, xml),
            Err(e) => xml_response(e.status, sts::error_body(&e)),
        });
    }
    let target = parts
        .headers
        .get("x-amz-target")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default();
    // Each JSON service is signed for its own name, as AWS checks.
    let (service, op) = match (
        target.strip_prefix("AmazonSSM."),
        target.strip_prefix(tagging::TARGET_PREFIX),
        target.strip_prefix(kms::TARGET_PREFIX),
    ) {
        (Some(op), _, _) => ("ssm", op),
        (_, Some(op), _) => ("tagging", op),
        (_, _, Some(op)) => ("kms", op),
        _ => ("ssm", ""),
    };
    let result = match verify(state, &parts, &body, service) {
        Err(e) => Err(e),
        Ok(_) if op.is_empty() => Err(ApiError::new(
            "UnknownOperationException",
            format!("Unknown operation {target}"),
        )),
        Ok(caller) => match parse_input(&body).and_then(|i| throttle(state, op).map(|()| i)) {
            Err(e) => Err(e),
            Ok(input) if service == "tagging" => tagging::dispatch(state, caller, op, &input).await,
            Ok(input) if service == "kms" => kms::dispatch(state, caller, op, &input),
            Ok(input) => dispatch(state, caller, op, &input).await,
        },
    };
    Ok(match result {
        Ok(v) => json_response(200, &v),
        Err(e) => error_response(&e),
    })
}

/// The signature, and whose it is.
fn verify<'a>(
    state: &'a SimState,
    parts: &hyper::http::request::Parts,
    body: &[u8],
    service: &str,
) -> Result<&'a Identity, ApiError> {
    let uri = parts.uri.to_string();
    let v = sigv4::verify(
        parts.method.as_str(),
        &uri,
        &parts.headers,
        body,
        service,
        &state.config,
    )
    .map_err(|e| ApiError::new(e.code, e.message))?;
    iam::caller(&state.config, &v.access_key).ok_or_else(|| {
        ApiError::new(
            "UnrecognizedClientException",
            "The security token included in the request is invalid.",
        )
    })
}

fn parse_input(body: &[u8]) -> ApiResult {
    if body.is_empty() {
        return Ok(Value::Object(Default::default()));
    }
    serde_json::from_slice(body)
        .map_err(|_| ApiError::new("SerializationException", "Request body is not JSON."))
}

async fn dispatch(state: &Arc<SimState>, caller: &Identity, op: &str, input: &Value) -> ApiResult {
    // Actions whose only resource is "*" in the Service Authorization Reference.
    if let Some(action) = match op {
        "DescribeSessions"
        | "DescribeInstanceInformation"
        | "GetCommandInvocation"
        | "ListCommandInvocations"
        | "ListCommands"
        | "CancelCommand" => Some(format!("ssm:{op}")),
        _ => None,
    } {
        authorize(state, caller, &action, &[Resource::new("*", "")], &[])?;
    }
    if matches!(op, "StartSession" | "ResumeSession") {
        tokio::time::sleep(state.config.start_session_delay).await;
    }
    match op {
        "StartSession" => ssm::start_session(state, caller, input),
        "ResumeSession" => ssm::resume_session(state, caller, input),
        "TerminateSession" => ssm::terminate_session(state, caller, input).await,
        "DescribeSessions" => ssm::describe_sessions(state, input),
        "DescribeInstanceInformation" => ssm::describe_instance_information(state, input),
        "SendCommand" => run::send_command(state, caller, input),
        "GetCommandInvocation" => run::get_command_invocation(state, input),
        "ListCommandInvocations" => run::list_command_invocations(state, input),
        "ListCommands" => run::list_commands(state, input),
        "CancelCommand" => run::cancel_command(state, input),
        other => Err(ApiError::new(
            "UnknownOperationException",
            format!("The simulator does not implement {other}."),
        )),
    }
}

fn throttle(state: &SimState, op: &str) -> Result<(), ApiError> {
    let Some(rule) = state.config.throttle.iter().find(|t| t.action == op) else {
        return Ok(());
    };
    let mut calls = lock(&state.calls_per_action);
    let n = calls.entry(op.to_string()).or_default();
    *n += 1;
    if *n > rule.skip && *n <= rule.skip.saturating_add(rule.count) {
        return Err(ApiError::new("ThrottlingException", "Rate exceeded"));
    }
    Ok(())
}

/// AccessDeniedException in AWS's own wording unless `caller` may do `action` on every
/// resource.
pub fn authorize(
    state: &SimState,
    caller: &Identity,
    action: &str,
    resources: &[Resource],
    extra: &[(&str, &str)],
) -> Result<(), ApiError> {
    iam::authorize(&state.config, caller, action, resources, extra)
        .map_err(|d| ApiError::new("AccessDeniedException", d.message))
}

fn json_response(status: u16, v: &Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(v).unwrap_or_default();
    Response::builder()
        .status(status)
        .header("content-type", "application/x-amz-json-1.1")
        .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn xml_response(status: u16, body: String) -> Response<Full<Bytes>> {
    Response::builder()
        .status(status)
        .header("content-type", "text/xml")
        .header("x-amzn-requestid", uuid::Uuid::new_v4().to_string())
        .body(Full::new(Bytes::from(body)))
        .unwrap_or_default()
}

fn error_response(e: &ApiError) -> Response<Full<Bytes>> {
    let mut r = json_response(
        e.status,
        &serde_json::json!({"__type": e.code, "message": e.message}),
    );
    if let Ok(v) = e.code.parse() {
        r.headers_mut().insert("x-amzn-errortype", v);
    }
    r
}
