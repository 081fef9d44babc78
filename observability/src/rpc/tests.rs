use std::sync::{Arc, Mutex};

use bytes::Bytes;

use super::*;

/// A hook that stores what it heard.
fn recorder() -> (Arc<Mutex<Vec<RpcOutcome>>>, impl OnOutcome) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let sink = seen.clone();
    (seen, move |outcome| sink.lock().unwrap().push(outcome))
}

fn trailers(code: Code) -> HeaderMap {
    let mut map = HeaderMap::new();
    tonic::Status::new(code, "x").add_header(&mut map).unwrap();
    map
}

/// A body that yields one data frame, then the given trailers.
fn stream_body(trailers: HeaderMap) -> tonic::body::Body {
    let frames = vec![
        Ok::<_, tonic::Status>(Frame::data(Bytes::from_static(b"item"))),
        Ok(Frame::trailers(trailers)),
    ];
    tonic::body::Body::new(http_body_util::StreamBody::new(tokio_stream::iter(frames)))
}

async fn drain<B: http_body::Body + Unpin>(body: &mut B) {
    while let Some(frame) = std::future::poll_fn(|cx| Pin::new(&mut *body).poll_frame(cx)).await {
        if frame.is_err() {
            break;
        }
    }
}

#[tokio::test]
async fn trailers_only_response_reports_at_headers() {
    let (seen, hook) = recorder();
    let response = tonic::Status::unavailable("down").into_http::<tonic::body::Body>();
    let _observed = observe_response(response, hook);
    assert_eq!(
        *seen.lock().unwrap(),
        vec![RpcOutcome::Status(Code::Unavailable)]
    );
}

#[tokio::test]
async fn streaming_outcome_is_reported_at_the_trailers_not_the_headers() {
    let (seen, hook) = recorder();
    let response = http::Response::new(stream_body(trailers(Code::Unavailable)));
    let mut observed = observe_response(response, hook);
    assert!(
        seen.lock().unwrap().is_empty(),
        "nothing is known at the headers"
    );
    drain(observed.body_mut()).await;
    assert_eq!(
        *seen.lock().unwrap(),
        vec![RpcOutcome::Status(Code::Unavailable)]
    );
}

#[tokio::test]
async fn dropping_the_body_early_reports_cancelled_once() {
    let (seen, hook) = recorder();
    let response = http::Response::new(stream_body(trailers(Code::Ok)));
    drop(observe_response(response, hook));
    assert_eq!(*seen.lock().unwrap(), vec![RpcOutcome::Cancelled]);
}

#[test]
fn non_grpc_http_errors_map_to_grpc_codes() {
    assert_eq!(
        RpcOutcome::Http(http::StatusCode::SERVICE_UNAVAILABLE).code(),
        Code::Unavailable
    );
    assert_eq!(
        RpcOutcome::Http(http::StatusCode::NOT_FOUND).code(),
        Code::Unimplemented
    );
    assert_eq!(split_grpc_path("/a.b.Svc/Call"), ("a.b.Svc", "Call"));
}
