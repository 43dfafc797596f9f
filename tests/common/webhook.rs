//! A webhook receiver for destination tests: a local HTTP server that answers 503 while `down`.
#![allow(dead_code)]

use std::{
    net::SocketAddr,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicUsize, Ordering},
    },
};

use axum::{Json, Router, extract::State, http::StatusCode, routing::post};
use serde_json::Value;

/// A webhook receiver: answers 503 while `down`, else stores the JSON body.
#[derive(Clone, Default)]
pub struct Receiver {
    pub down: Arc<AtomicBool>,
    pub refused: Arc<AtomicUsize>,
    pub bodies: Arc<Mutex<Vec<Value>>>,
}

async fn hook(State(r): State<Receiver>, Json(body): Json<Value>) -> StatusCode {
    if r.down.load(Ordering::SeqCst) {
        r.refused.fetch_add(1, Ordering::SeqCst);
        return StatusCode::SERVICE_UNAVAILABLE;
    }
    r.bodies.lock().unwrap().push(body);
    StatusCode::OK
}

pub fn start_receiver(r: Receiver) -> SocketAddr {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let addr = listener.local_addr().unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            let app = Router::new().route("/hook", post(hook)).with_state(r);
            axum::serve(listener, app).await.unwrap();
        });
    });
    addr
}
