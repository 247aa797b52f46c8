//! A link between two cluster nodes that a test can cut and mend: a TCP
//! forwarder on a loopback port in front of a node's cluster address, which
//! the other node is told to dial. Cut, it closes every connection through
//! it and drops new ones as they arrive, as a partition between the two
//! would (each node still reaches the database); mended, it forwards again.

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
async fn forward(mut inbound: TcpStream, target: u16, mut open: watch::Receiver<bool>) {
    let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    tokio::select! {
        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
        _ = open.wait_for(|open| !*open) => {}
    }
}
