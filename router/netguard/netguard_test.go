package netguard

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"testing"
	"time"
)

func TestPublic(t *testing.T) {
	for _, c := range []struct {
		addr string
		want bool
	}{
		{"8.8.8.8", true},
		{"1.1.1.1", true},
		{"2001:4860::8888", true},
		{"2606:4700::1111", true},
		{"::ffff:8.8.8.8", true},
		{"64:ff9b::808:808", true},
		{"2002:808:808::1", true},
		{"127.0.0.1", false},
		{"127.0.0.2", false},
		{"10.1.2.3", false},
		{"172.16.0.1", false},
		{"192.168.1.1", false},
		{"169.254.169.254", false},
		{"100.64.0.1", false},
		{"100.127.255.254", false},
		{"0.0.0.0", false},
		{"0.1.2.3", false},
		{"224.0.0.1", false},
		{"255.255.255.255", false},
		{"240.0.0.1", false},
		{"198.18.0.1", false},
		{"::", false},
		{"::1", false},
		{"fd00::1", false},
		{"fe80::1", false},
		{"fe80::1%eth0", false},
		{"ff02::1", false},
		{"::ffff:127.0.0.1", false},
		{"::ffff:169.254.169.254", false},
		{"::ffff:10.0.0.1", false},
		{"::127.0.0.1", false},
		{"64:ff9b::a00:1", false},
		{"64:ff9b:1::1", false},
		{"2002:7f00:1::1", false},
		{"fec0::1", false},        // site-local (deprecated private range)
		{"feff:ffff::1", false},   // site-local
		{"2001:2::1", false},      // benchmarking, as 198.18.0.0/15
		{"2001:4:112::1", true},   // AS112, globally reachable
		{"2a00:1450::200e", true}, // public
	} {
		if got := Public(netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("Public(%s) = %v, want %v", c.addr, got, c.want)
		}
	}
	if Public(netip.Addr{}) {
		t.Error("the zero Addr is public")
	}
}

func TestCheck(t *testing.T) {
	for _, a := range []string{"127.0.0.1:80", "[::1]:443", "[::ffff:10.0.0.1]:80", "garbage", "example.com:80"} {
		if err := Check(a); !errors.Is(err, ErrNotPublic) {
			t.Errorf("Check(%q) = %v, want ErrNotPublic", a, err)
		}
	}
	if err := Check("8.8.8.8:53"); err != nil {
		t.Errorf("Check(8.8.8.8:53) = %v", err)
	}
}

// A host name resolving to loopback is refused at connect time, the
// literal too; allowPrivate lets both through.
func TestDialer(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Close()
		}
	}()
	_, port, _ := net.SplitHostPort(ln.Addr().String())
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, host := range []string{"127.0.0.1", "localhost"} {
		addr := net.JoinHostPort(host, port)
		if c, err := Dialer(time.Second, false).DialContext(ctx, "tcp", addr); !errors.Is(err, ErrNotPublic) {
			if c != nil {
				c.Close()
			}
			t.Errorf("guarded dial of %s = %v, want ErrNotPublic", addr, err)
		}
		if host == "localhost" {
			continue // may resolve to ::1 first, where nothing listens
		}
		c, err := Dialer(time.Second, true).DialContext(ctx, "tcp", addr)
		if err != nil {
			t.Errorf("dial of %s with allowPrivate: %v", addr, err)
		} else {
			c.Close()
		}
	}
}

// Link-local and metadata addresses are refused by both guards: the strict
// one and the one allowing loopback and private addresses.
func TestSensitiveRefusedEvenWhenPrivateAllowed(t *testing.T) {
	for _, a := range []string{"169.254.169.254:80", "169.254.0.1:80", "[fe80::1]:80", "100.100.100.200:80",
		"[fd00:ec2::254]:80", "[::ffff:169.254.169.254]:80", "168.63.129.16:80"} {
		if err := CheckNotSensitive(a); !errors.Is(err, ErrNotPublic) {
			t.Errorf("CheckNotSensitive(%s) = %v, want ErrNotPublic", a, err)
		}
		if err := Check(a); !errors.Is(err, ErrNotPublic) {
			t.Errorf("Check(%s) = %v, want ErrNotPublic", a, err)
		}
	}
	for _, a := range []string{"127.0.0.1:80", "10.0.0.1:80", "192.168.1.1:80", "[::1]:80", "100.100.100.201:80", "8.8.8.8:53"} {
		if err := CheckNotSensitive(a); err != nil {
			t.Errorf("CheckNotSensitive(%s) = %v, want nil", a, err)
		}
	}
	// The private-allowing dialer still refuses a metadata address at
	// connect time.
	d := Dialer(time.Second, true)
	if _, err := d.Dial("tcp", "169.254.169.254:80"); !errors.Is(err, ErrNotPublic) {
		t.Errorf("dial 169.254.169.254 with private allowed: %v, want ErrNotPublic", err)
	}
}

// The IPv6 forms that carry an IPv4 address (IPv4-compatible, NAT64,
// 6to4) of a link-local or metadata address are as sensitive as the
// address itself: the guard allowing private addresses refuses them too.
func TestSensitiveEmbeddedIPv4(t *testing.T) {
	for _, a := range []string{
		"::a9fe:a9fe",              // IPv4-compatible 169.254.169.254
		"64:ff9b::a9fe:a9fe",       // NAT64
		"64:ff9b::6464:64c8",       // NAT64 100.100.100.200
		"64:ff9b::a83f:8110",       // NAT64 168.63.129.16
		"2002:a9fe:a9fe::1",        // 6to4
		"2002:a9fe:1::",            // 6to4 169.254.0.1
		"::ffff:100.100.100.200",   // IPv4-mapped
		"64:ff9b::a9fe:a9fe%eth0",  // with a zone
		"2002:a83f:8110:1:2:3:4:5", // 6to4 168.63.129.16
		"::ffff:0:a9fe:a9fe",       // IPv4-translated
	} {
		if !Sensitive(netip.MustParseAddr(a)) {
			t.Errorf("Sensitive(%s) = false", a)
		}
	}
	for _, a := range []string{"64:ff9b::a00:1", "2002:a00:1::1", "::a00:1", "64:ff9b::808:808", "2002:808:808::1", "2001:4860::8888"} {
		if Sensitive(netip.MustParseAddr(a)) {
			t.Errorf("Sensitive(%s) = true", a)
		}
	}
}

// Teredo (2001::/32) carries its server's IPv4 address in bits 32..63 and
// its client's, inverted, in the last 32 bits: both must be public, and a
// link-local or metadata one makes the address sensitive.
func TestTeredo(t *testing.T) {
	for _, c := range []struct {
		addr            string
		public, sensitv bool
	}{
		{"2001:0:4136:e378:8000:63bf:f7f7:f7f7", true, false},  // server 65.54.227.120, client 8.8.8.8
		{"2001:0:4136:e378:8000:63bf:80ff:fffe", false, false}, // client 127.0.0.1
		{"2001:0:4136:e378::f5ff:fffe", false, false},          // client 10.0.0.1
		{"2001:0:4136:e378::3f57:fefe", false, false},          // client 192.168.1.1
		{"2001:0:4136:e378::9bbf:fffe", false, false},          // client 100.64.0.1
		{"2001:0:7f00:1::f7f7:f7f7", false, false},             // server 127.0.0.1
		{"2001:0:a00:1::f7f7:f7f7", false, false},              // server 10.0.0.1
		{"2001:0:4136:e378::5601:5601", false, true},           // client 169.254.169.254
		{"2001:0:4136:e378::9b9b:9b37", false, true},           // client 100.100.100.200
		{"2001:0:a9fe:a9fe::f7f7:f7f7", false, true},           // server 169.254.169.254
		{"2001:0:a83f:8110::f7f7:f7f7", true, true},            // server 168.63.129.16: public, but Azure's wire server
	} {
		a := netip.MustParseAddr(c.addr)
		if got := Public(a); got != c.public {
			t.Errorf("Public(%s) = %v, want %v", c.addr, got, c.public)
		}
		if got := Sensitive(a); got != c.sensitv {
			t.Errorf("Sensitive(%s) = %v, want %v", c.addr, got, c.sensitv)
		}
		ap := netip.AddrPortFrom(a, 80).String()
		if err := Check(ap); (err == nil) != (c.public && !c.sensitv) {
			t.Errorf("Check(%s) = %v", ap, err)
		}
		if err := CheckNotSensitive(ap); (err == nil) == c.sensitv {
			t.Errorf("CheckNotSensitive(%s) = %v", ap, err)
		}
	}
}

// Outside 2000::/3, IANA's global unicast space, an IPv6 address is not
// public (other than the forms carrying a public IPv4 address): the
// reserved ::/8 (RFC 2765's IPv4-translated ::ffff:0:a.b.c.d, which a
// stateless translator maps to the IPv4 address), SRv6 SIDs (5f00::/16),
// unassigned space.
func TestOutsideGlobalUnicastSpace(t *testing.T) {
	for _, c := range []struct {
		addr string
		want bool
	}{
		{"::ffff:0:a00:1", false},     // IPv4-translated 10.0.0.1
		{"::ffff:0:7f00:1", false},    // IPv4-translated 127.0.0.1
		{"::ffff:0:a9fe:a9fe", false}, // IPv4-translated 169.254.169.254
		{"::1:0:0:1", false},
		{"5f00::1", false},
		{"4000::1", false},
		{"e000::1", false},
		{"::808:808", true}, // IPv4-compatible 8.8.8.8
		{"64:ff9b::808:808", true},
		{"2a00:1450::200e", true},
		{"3fff::1", true}, // documentation: passes, as 2001:db8::/32
	} {
		if got := Public(netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("Public(%s) = %v, want %v", c.addr, got, c.want)
		}
	}
}

// The IPv6 metadata addresses of other clouds, and the credential agents
// beside them, are as sensitive as AWS's fd00:ec2::254: private
// addresses (which the guard for dorad dev allows) that hand out the
// host's credentials.
func TestSensitiveMetadataIPv6(t *testing.T) {
	for _, a := range []string{
		"[fd20:ce::254]:80", // GCP metadata over IPv6
		"[fd00:ec2::23]:80", // AWS EKS Pod Identity Agent over IPv6
		"[fd00:42::42]:80",  // Scaleway metadata over IPv6
		"192.0.0.192:80",    // Oracle Cloud (Classic) metadata
	} {
		if err := CheckNotSensitive(a); !errors.Is(err, ErrNotPublic) {
			t.Errorf("CheckNotSensitive(%s) = %v, want ErrNotPublic", a, err)
		}
		if err := Check(a); !errors.Is(err, ErrNotPublic) {
			t.Errorf("Check(%s) = %v, want ErrNotPublic", a, err)
		}
	}
	for _, a := range []string{"[fd20:ce::253]:80", "[fd00:ec2::22]:80", "192.0.0.191:80"} {
		if err := CheckNotSensitive(a); err != nil {
			t.Errorf("CheckNotSensitive(%s) = %v, want nil", a, err)
		}
	}
}

// 2001::/23 (IETF protocol assignments) is not globally reachable (RFC
// 6890) except the sub-blocks IANA's registry lists as such: Teredo
// (judged by its IPv4 addresses), the PCP and TURN anycast addresses, AMT,
// AS112, ORCHIDv2 and DRIP.
func TestIETFProtocolAssignments(t *testing.T) {
	for _, c := range []struct {
		addr string
		want bool
	}{
		{"2001:1::1", true},                            // PCP anycast
		{"2001:1::2", true},                            // TURN anycast
		{"2001:1::3", true},                            // DNS-SD SRP anycast
		{"2001:3::1", true},                            // AMT
		{"2001:4:112::1", true},                        // AS112
		{"2001:20::1", true},                           // ORCHIDv2
		{"2001:30::1", true},                           // DRIP
		{"2001:0:4136:e378:8000:63bf:f7f7:f7f7", true}, // Teredo, public server and client
		{"2001:1::4", false},
		{"2001:2::1", false},  // benchmarking
		{"2001:4::1", false},  // unassigned
		{"2001:10::1", false}, // ORCHID (deprecated)
		{"2001:100::1", false},
		{"2001:1ff::1", false},
		{"2001:200::1", true}, // past 2001::/23: WIDE, public
	} {
		if got := Public(netip.MustParseAddr(c.addr)); got != c.want {
			t.Errorf("Public(%s) = %v, want %v", c.addr, got, c.want)
		}
	}
}
