// Package netguard keeps outgoing connections that a user's input decides
// (a bucket's mirror, a pfop notifyURL) away from the platform's own
// network: a net.Dialer.Control hook refuses, at connect time — after DNS,
// so a host name resolving (or rebound) to 127.0.0.1, 10.x or
// 169.254.169.254 is caught as well as a literal — every address that is
// not public unicast.
//
// It is shared by router/origin/httpmirror and admin/pfop so that both
// apply one rule.
package netguard

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"syscall"
	"time"
)

// ErrNotPublic is wrapped by every refusal.
var ErrNotPublic = errors.New("not a public address")

// Non-public IPv4 ranges beyond what net/netip's predicates name
// (immutable tables).
var (
	blocked4 = []netip.Prefix{
		netip.MustParsePrefix("0.0.0.0/8"),     // "this network"
		netip.MustParsePrefix("100.64.0.0/10"), // shared address space, CGNAT (RFC 6598)
		netip.MustParsePrefix("192.0.0.0/24"),  // IETF protocol assignments
		netip.MustParsePrefix("198.18.0.0/15"), // benchmarking
		netip.MustParsePrefix("240.0.0.0/4"),   // reserved, broadcast
	}
	// IPv6 prefixes that carry an IPv4 address in their last 32 bits:
	// the embedded address must be public too.
	embeds4 = []netip.Prefix{
		netip.MustParsePrefix("::/96"),           // IPv4-compatible (deprecated)
		netip.MustParsePrefix("64:ff9b::/96"),    // NAT64
		netip.MustParsePrefix("::ffff:0:0:0/96"), // IPv4-translated (RFC 2765 SIIT)
	}
	sixToFour = netip.MustParsePrefix("2002::/16") // 6to4: IPv4 in bits 16..47
	// Teredo (RFC 4380): the server's IPv4 address in bits 32..63, the
	// client's, inverted, in the last 32 bits. A host with a Teredo
	// interface sends to the client address over UDP, so both are judged.
	teredo = netip.MustParsePrefix("2001::/32")
	// IANA's global unicast space: an IPv6 address outside it (the
	// reserved ::/8, 5f00::/16 SRv6 SIDs, unassigned space) is not public
	// unless it carries a public IPv4 address (embeds4).
	global6 = netip.MustParsePrefix("2000::/3")
	// IETF protocol assignments: not globally reachable (RFC 6890) but
	// for the sub-blocks of ietfGlobal and Teredo (judged by embedded4).
	ietf6      = netip.MustParsePrefix("2001::/23")
	ietfGlobal = []netip.Prefix{
		netip.MustParsePrefix("2001:1::1/128"),   // Port Control Protocol anycast
		netip.MustParsePrefix("2001:1::2/128"),   // TURN anycast
		netip.MustParsePrefix("2001:1::3/128"),   // DNS-SD Service Registration Protocol anycast
		netip.MustParsePrefix("2001:3::/32"),     // AMT
		netip.MustParsePrefix("2001:4:112::/48"), // AS112-v6
		netip.MustParsePrefix("2001:20::/28"),    // ORCHIDv2
		netip.MustParsePrefix("2001:30::/28"),    // DRIP entity tags
	}
	// Non-public IPv6 ranges beyond what net/netip's predicates name.
	blocked6 = []netip.Prefix{
		netip.MustParsePrefix("64:ff9b:1::/48"), // local-use NAT64
		netip.MustParsePrefix("100::/64"),       // discard-only
		netip.MustParsePrefix("fec0::/10"),      // site-local: the deprecated private range, global unicast to net/netip
		netip.MustParsePrefix("2001:2::/48"),    // benchmarking, as 198.18.0.0/15
	}
)

// Link-local and cloud instance-metadata addresses: refused even where
// private addresses are allowed (immutable table).
var sensitive = []netip.Prefix{
	netip.MustParsePrefix("169.254.0.0/16"),     // IPv4 link-local; 169.254.169.254 is AWS/GCP/Azure/OpenStack metadata
	netip.MustParsePrefix("fe80::/10"),          // IPv6 link-local
	netip.MustParsePrefix("100.100.100.200/32"), // Alibaba Cloud metadata
	netip.MustParsePrefix("fd00:ec2::254/128"),  // AWS metadata over IPv6
	netip.MustParsePrefix("fd00:ec2::23/128"),   // AWS EKS Pod Identity Agent over IPv6 (credentials)
	netip.MustParsePrefix("fd20:ce::254/128"),   // GCP metadata over IPv6
	netip.MustParsePrefix("fd00:42::42/128"),    // Scaleway metadata over IPv6
	netip.MustParsePrefix("168.63.129.16/32"),   // Azure wire server
	netip.MustParsePrefix("192.0.0.192/32"),     // Oracle Cloud (Classic) metadata
}

// Sensitive reports whether a is link-local or a cloud instance-metadata
// address (also in an IPv4-mapped, IPv4-compatible, IPv4-translated,
// NAT64, 6to4 or Teredo form, Teredo's server or client):
// never dialled for user input, not even where loopback and private
// addresses are allowed (dorad dev's --allow-private-mirror), since it
// hands out the host's credentials.
func Sensitive(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	if a.IsLinkLocalUnicast() || a.IsLinkLocalMulticast() {
		return true
	}
	for _, p := range sensitive {
		if p.Contains(a) {
			return true
		}
	}
	for _, v4 := range embedded4(a) {
		if Sensitive(v4) {
			return true
		}
	}
	return false
}

// embedded4 returns the IPv4 addresses an IPv4-compatible,
// IPv4-translated, NAT64, 6to4 or Teredo address a carries (none for other
// addresses; two for Teredo: its server and its client).
func embedded4(a netip.Addr) []netip.Addr {
	if !a.Is6() {
		return nil
	}
	b := a.As16()
	for _, p := range embeds4 {
		if p.Contains(a) {
			return []netip.Addr{netip.AddrFrom4([4]byte(b[12:16]))}
		}
	}
	if sixToFour.Contains(a) {
		return []netip.Addr{netip.AddrFrom4([4]byte(b[2:6]))}
	}
	if teredo.Contains(a) {
		client := [4]byte(b[12:16])
		for i := range client {
			client[i] ^= 0xff
		}
		return []netip.Addr{netip.AddrFrom4([4]byte(b[4:8])), netip.AddrFrom4(client)}
	}
	return nil
}

// CheckNotSensitive refuses a dialled "ip:port" whose IP is Sensitive; the
// error wraps ErrNotPublic.
func CheckNotSensitive(address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: address %q: %v", ErrNotPublic, address, err)
	}
	if Sensitive(ap.Addr()) {
		return fmt.Errorf("%w: %s is link-local or a metadata address", ErrNotPublic, ap.Addr())
	}
	return nil
}

// Public reports whether a is a public unicast address: not loopback,
// private (10/8, 172.16/12, 192.168/16, fc00::/7), link-local, multicast,
// unspecified, CGNAT (100.64/10), 0/8, site-local (fec0::/10) or reserved
// ranges (documentation ranges pass: they route nowhere); an IPv6 address
// must be in 2000::/3, the global unicast space, and not in 2001::/23 but
// for its globally reachable sub-blocks (RFC 6890, IANA's registry). IPv4-mapped
// (::ffff:a.b.c.d), IPv4-compatible, IPv4-translated (::ffff:0:a.b.c.d),
// NAT64 and 6to4 forms are judged by the IPv4 address they carry, Teredo
// (2001::/32) by both of its: the server's and the client's.
func Public(a netip.Addr) bool {
	a = a.WithZone("").Unmap()
	if !a.IsValid() || !a.IsGlobalUnicast() || a.IsPrivate() {
		return false
	}
	if a.Is4() {
		for _, p := range blocked4 {
			if p.Contains(a) {
				return false
			}
		}
		return true
	}
	for _, p := range blocked6 {
		if p.Contains(a) {
			return false
		}
	}
	if ietf6.Contains(a) && !teredo.Contains(a) && !containedIn(ietfGlobal, a) {
		return false
	}
	v4s := embedded4(a)
	for _, v4 := range v4s {
		if !Public(v4) {
			return false
		}
	}
	return len(v4s) > 0 || global6.Contains(a)
}

func containedIn(ps []netip.Prefix, a netip.Addr) bool {
	for _, p := range ps {
		if p.Contains(a) {
			return true
		}
	}
	return false
}

// Check refuses a dialled "ip:port" whose IP is not Public; the error
// wraps ErrNotPublic.
func Check(address string) error {
	ap, err := netip.ParseAddrPort(address)
	if err != nil {
		return fmt.Errorf("%w: address %q: %v", ErrNotPublic, address, err)
	}
	if !Public(ap.Addr()) || Sensitive(ap.Addr()) {
		return fmt.Errorf("%w: %s", ErrNotPublic, ap.Addr())
	}
	return nil
}

// Control is a net.Dialer.Control hook applying Check to the resolved
// address of every connection attempt.
func Control(_, address string, _ syscall.RawConn) error { return Check(address) }

// ControlNotSensitive is a net.Dialer.Control hook applying
// CheckNotSensitive: the guard where private addresses are allowed.
func ControlNotSensitive(_, address string, _ syscall.RawConn) error {
	return CheckNotSensitive(address)
}

// Dialer returns a dialer with the given connect timeout that refuses
// non-public addresses (Control) or, when allowPrivate, link-local and
// metadata addresses still (ControlNotSensitive). A client using it must
// not use a proxy: the proxy, not the guard, would resolve the name.
func Dialer(timeout time.Duration, allowPrivate bool) *net.Dialer {
	d := &net.Dialer{Timeout: timeout, KeepAlive: 30 * time.Second, Control: Control}
	if allowPrivate {
		d.Control = ControlNotSensitive
	}
	return d
}
