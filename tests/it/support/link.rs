//! A link between two cluster nodes that a test can cut and mend: a TCP
//! forwarder on a loopback port in front of a node's cluster address, which
//! the other node is told to dial. Cut, it closes every connection through
//! it and drops new ones as they arrive, as a partition between the two
//! would (each node still reaches the database); mended, it forwards again.
//! And a [`Balancer`]: a load balancer in front of several nodes.

use std::net::SocketAddr;

use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub struct Link {
    address: SocketAddr,
    open: watch::Sender<bool>,
    accepting: JoinHandle<()>,
}

impl Link {
    /// A link to `127.0.0.1:{target}`, open.
    pub fn open(target: u16) -> Link {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let (open, _) = watch::channel(true);
        let accepting = tokio::spawn(accept(listener, target, open.clone()));
        Link {
            address,
            open,
            accepting,
        }
    }

    /// What the dialling node is told: `127.0.0.1:{port}`.
    pub fn address(&self) -> String {
        self.address.to_string()
    }

    pub fn cut(&self) {
        self.open.send_replace(false);
    }

    pub fn mend(&self) {
        self.open.send_replace(true);
    }
}

impl Drop for Link {
    fn drop(&mut self) {
        self.cut();
        self.accepting.abort();
    }
}

async fn accept(listener: TcpListener, target: u16, open: watch::Sender<bool>) {
    while let Ok((inbound, _)) = listener.accept().await {
        if *open.borrow() {
            tokio::spawn(forward(inbound, target, open.subscribe()));
        }
        // Cut: the connection is dropped as it arrives.
    }
}

/// Copies both ways until either side closes or the link is cut.
async fn forward(inbound: TcpStream, target: u16, mut open: watch::Receiver<bool>) {
    pipe(inbound, target, async move {
        let _ = open.wait_for(|open| !*open).await;
    })
    .await;
}

/// Copies both ways between `inbound` and `127.0.0.1:{target}` until either
/// side closes or `until` is ready.
async fn pipe(mut inbound: TcpStream, target: u16, until: impl std::future::Future<Output = ()>) {
    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        () = until => {}
    }
}

/// A load balancer in front of several nodes' HTTP ports: each connection
/// goes to the next node in turn, so one client's requests (over the
/// connections it opens) reach them all.
pub struct Balancer {
    address: SocketAddr,
    accepting: JoinHandle<()>,
}

impl Balancer {
    pub fn open(targets: Vec<u16>) -> Balancer {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let address = listener.local_addr().unwrap();
        let listener = TcpListener::from_std(listener).unwrap();
        let accepting = tokio::spawn(async move {
            let mut turn = 0;
            while let Ok((inbound, _)) = listener.accept().await {
                let target = targets[turn % targets.len()];
                turn += 1;
                tokio::spawn(pipe(inbound, target, std::future::pending()));
            }
        });
        Balancer { address, accepting }
    }

    pub fn base(&self) -> String {
        format!("http://{}", self.address)
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.accepting.abort();
    }
}
