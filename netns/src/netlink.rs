//! A small synchronous rtnetlink client: one socket bound to the namespace it was opened in.

use std::io;
use std::net::Ipv4Addr;
use std::os::fd::{AsRawFd, BorrowedFd};

use netlink_packet_core::{
    NetlinkHeader, NetlinkMessage, NetlinkPayload, NLM_F_ACK, NLM_F_CREATE, NLM_F_DUMP, NLM_F_EXCL,
    NLM_F_REQUEST,
};
use netlink_packet_route::address::{AddressAttribute, AddressFlags, AddressMessage};
use netlink_packet_route::link::{
    InfoData, InfoKind, InfoVeth, LinkAttribute, LinkFlags, LinkInfo, LinkMessage,
};
use netlink_packet_route::route::{
    RouteAddress, RouteAttribute, RouteHeader, RouteMessage, RouteProtocol, RouteScope, RouteType,
};
use netlink_packet_route::{AddressFamily, RouteNetlinkMessage};
use netlink_sys::{protocols::NETLINK_ROUTE, Socket, SocketAddr};

/// The loopback interface's index in every network namespace.
pub(crate) const LOOPBACK_INDEX: u32 = 1;
/// The interface group kiln puts its veths in (ASCII "kiln"), so one request deletes them all.
pub(crate) const KILN_GROUP: u32 = 0x6b69_6c6e;
/// Receive buffer size: larger than any single netlink datagram the kernel sends.
const RECV_BUF: usize = 64 * 1024;

/// How a request's replies end.
#[derive(Clone, Copy, PartialEq, Eq)]
enum End {
    /// An ACK (an error message with code 0).
    Ack,
    /// A `NLMSG_DONE` after a multipart dump.
    Done,
}

/// An rtnetlink socket in one network namespace.
pub(crate) struct Netlink {
    socket: Socket,
    seq: u32,
    buf: Vec<u8>,
}

impl Netlink {
    /// Opens a socket in the calling thread's current network namespace.
    pub(crate) fn open() -> io::Result<Self> {
        let mut socket = Socket::new(NETLINK_ROUTE)?;
        socket.bind_auto()?;
        socket.connect(&SocketAddr::new(0, 0))?;
        Ok(Self {
            socket,
            seq: 0,
            buf: Vec::with_capacity(RECV_BUF),
        })
    }

    /// Sends `msg` with `flags` and collects the replies until `end`.
    fn exchange(
        &mut self,
        msg: RouteNetlinkMessage,
        flags: u16,
        end: End,
    ) -> io::Result<Vec<RouteNetlinkMessage>> {
        self.seq = self.seq.wrapping_add(1);
        let seq = self.seq;
        let mut packet = NetlinkMessage::new(NetlinkHeader::default(), NetlinkPayload::from(msg));
        packet.header.flags = NLM_F_REQUEST | flags;
        packet.header.sequence_number = seq;
        packet.finalize();
        let mut out = vec![0; packet.buffer_len()];
        packet.serialize(&mut out);
        self.socket.send(&out, 0)?;

        let mut replies = Vec::new();
        loop {
            self.buf.clear();
            let n = self.socket.recv(&mut self.buf, 0)?.min(self.buf.len());
            let mut offset = 0;
            while offset < n {
                let msg: NetlinkMessage<RouteNetlinkMessage> =
                    NetlinkMessage::deserialize(&self.buf[offset..n])
                        .map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e.to_string()))?;
                let len = msg.header.length as usize;
                if len == 0 {
                    break;
                }
                offset += (len + 3) & !3;
                if msg.header.sequence_number != seq {
                    continue;
                }
                match msg.payload {
                    NetlinkPayload::Error(e) => match e.code {
                        Some(_) => return Err(e.to_io()),
                        None if end == End::Ack => return Ok(replies),
                        None => {}
                    },
                    NetlinkPayload::Done(_) => return Ok(replies),
                    NetlinkPayload::InnerMessage(m) => replies.push(m),
                    _ => {}
                }
            }
        }
    }

    /// Sends a change request and waits for the kernel's ACK.
    fn change(&mut self, msg: RouteNetlinkMessage, flags: u16) -> io::Result<()> {
        self.exchange(msg, flags | NLM_F_ACK, End::Ack).map(drop)
    }

    /// Dumps every object of a kind, keeping the replies `pick` accepts.
    fn dump<T>(
        &mut self,
        msg: RouteNetlinkMessage,
        pick: impl FnMut(RouteNetlinkMessage) -> Option<T>,
    ) -> io::Result<Vec<T>> {
        let replies = self.exchange(msg, NLM_F_DUMP, End::Done)?;
        Ok(replies.into_iter().filter_map(pick).collect())
    }

    /// Brings interface `index` up.
    pub(crate) fn set_up(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        msg.header.flags = LinkFlags::Up;
        msg.header.change_mask = LinkFlags::Up;
        self.change(RouteNetlinkMessage::SetLink(msg), 0)
    }

    /// Creates a veth pair (down): `name` here, `peer` in the namespace `peer_ns`.
    pub(crate) fn create_veth(
        &mut self,
        name: &str,
        peer: &str,
        peer_ns: BorrowedFd<'_>,
    ) -> io::Result<()> {
        let mut peer_msg = LinkMessage::default();
        peer_msg.attributes = vec![
            LinkAttribute::IfName(peer.to_string()),
            LinkAttribute::NetNsFd(peer_ns.as_raw_fd()),
            LinkAttribute::Group(KILN_GROUP),
        ];
        let mut msg = LinkMessage::default();
        msg.attributes = vec![
            LinkAttribute::IfName(name.to_string()),
            LinkAttribute::Group(KILN_GROUP),
            LinkAttribute::LinkInfo(vec![
                LinkInfo::Kind(InfoKind::Veth),
                LinkInfo::Data(InfoData::Veth(InfoVeth::Peer(peer_msg))),
            ]),
        ];
        self.change(RouteNetlinkMessage::NewLink(msg), NLM_F_CREATE | NLM_F_EXCL)
    }

    /// The index of interface `name`.
    pub(crate) fn link_index(&mut self, name: &str) -> io::Result<u32> {
        let mut msg = LinkMessage::default();
        msg.attributes = vec![LinkAttribute::IfName(name.to_string())];
        let replies = self.exchange(RouteNetlinkMessage::GetLink(msg), NLM_F_ACK, End::Ack)?;
        replies
            .into_iter()
            .find_map(|m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l.header.index),
                _ => None,
            })
            .ok_or_else(|| io::Error::from_raw_os_error(nix::libc::ENODEV))
    }

    /// Deletes interface `index` (a veth's peer goes with it).
    pub(crate) fn delete_link(&mut self, index: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.header.index = index;
        self.change(RouteNetlinkMessage::DelLink(msg), 0)
    }

    /// Deletes every interface of `group` in this namespace in one batch (and their peers).
    pub(crate) fn delete_group(&mut self, group: u32) -> io::Result<()> {
        let mut msg = LinkMessage::default();
        msg.attributes = vec![LinkAttribute::Group(group)];
        match self.change(RouteNetlinkMessage::DelLink(msg), 0) {
            Err(e) if e.raw_os_error() == Some(nix::libc::ENODEV) => Ok(()),
            other => other,
        }
    }

    /// Adds `ip/prefix` to interface `index`, without the prefix route.
    pub(crate) fn add_address(&mut self, index: u32, ip: Ipv4Addr, prefix: u8) -> io::Result<()> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        msg.header.prefix_len = prefix;
        msg.header.index = index;
        msg.attributes = vec![
            AddressAttribute::Local(ip.into()),
            AddressAttribute::Address(ip.into()),
            AddressAttribute::Flags(AddressFlags::Noprefixroute),
        ];
        self.change(
            RouteNetlinkMessage::NewAddress(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Adds a link-scope route to the single host `dst` through interface `index`.
    pub(crate) fn add_host_route(&mut self, dst: Ipv4Addr, index: u32) -> io::Result<()> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        msg.header.destination_prefix_length = 32;
        msg.header.table = RouteHeader::RT_TABLE_MAIN;
        msg.header.protocol = RouteProtocol::Static;
        msg.header.scope = RouteScope::Link;
        msg.header.kind = RouteType::Unicast;
        msg.attributes = vec![
            RouteAttribute::Destination(RouteAddress::Inet(dst)),
            RouteAttribute::Oif(index),
        ];
        self.change(
            RouteNetlinkMessage::NewRoute(msg),
            NLM_F_CREATE | NLM_F_EXCL,
        )
    }

    /// Every interface in this namespace.
    pub(crate) fn links(&mut self) -> io::Result<Vec<LinkMessage>> {
        self.dump(
            RouteNetlinkMessage::GetLink(LinkMessage::default()),
            |m| match m {
                RouteNetlinkMessage::NewLink(l) => Some(l),
                _ => None,
            },
        )
    }

    /// Every IPv4 address in this namespace.
    pub(crate) fn addresses(&mut self) -> io::Result<Vec<AddressMessage>> {
        let mut msg = AddressMessage::default();
        msg.header.family = AddressFamily::Inet;
        self.dump(RouteNetlinkMessage::GetAddress(msg), |m| match m {
            RouteNetlinkMessage::NewAddress(a) => Some(a),
            _ => None,
        })
    }

    /// Every IPv4 route in this namespace's main table.
    pub(crate) fn routes(&mut self) -> io::Result<Vec<RouteMessage>> {
        let mut msg = RouteMessage::default();
        msg.header.address_family = AddressFamily::Inet;
        self.dump(RouteNetlinkMessage::GetRoute(msg), |m| match m {
            RouteNetlinkMessage::NewRoute(r) if r.header.table == RouteHeader::RT_TABLE_MAIN => {
                Some(r)
            }
            _ => None,
        })
    }
}
