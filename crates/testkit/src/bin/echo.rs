//! `vestibule-echo`: a small echo backend for the quickstart and for trying Vestibule by hand.
//!
//! Usage: `vestibule-echo NAME ADDR [NAME ADDR]...` — one echo server per pair.

use std::sync::Arc;

#[tokio::main]
async fn main() -> std::io::Result<()> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    if args.is_empty() || !args.len().is_multiple_of(2) {
        return Err(std::io::Error::other(
            "usage: vestibule-echo NAME ADDR [NAME ADDR]...",
        ));
    }
    let mut tasks = Vec::new();
    for pair in args.chunks(2) {
        let (name, addr) = (pair[0].clone(), &pair[1]);
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| std::io::Error::new(e.kind(), format!("binding {addr}: {e}")))?;
        tasks.push(tokio::spawn(vestibule_testkit::echo::serve(
            listener,
            name,
            Arc::new(vestibule_testkit::echo::Counters::default()),
        )));
    }
    for task in tasks {
        task.await.map_err(std::io::Error::other)?;
    }
    Ok(())
}
