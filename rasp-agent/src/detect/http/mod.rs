//! HTTP over the OpenSSL plaintext hooks: incremental HTTP/1.x parsing per connection
//! (`parse`), detections over messages and plaintext (`secrets`: secrets leaving, admin paths,
//! injection payloads), login floods per client (`flood`), request values reaching SQL
//! (`taint`), and the analyzer stage that runs them on each connection's plaintext
//! (`stage`).

pub mod flood;
pub mod parse;
pub mod secrets;
pub mod stage;
pub mod taint;

pub use flood::{Clock, FloodAlert, FloodConfig, LoginFloodDetector, MonotonicClock};
pub use parse::{
    Direction, HttpLimits, HttpMessage, HttpRequest, HttpResponse, HttpStream, Protocol,
};
pub use secrets::{HttpFinding, HttpFindingKind, LeakCarry, RequestInspector, SecretLeakDetector};
