package gem

import (
	"fmt"
	"net"

	"github.com/arloliu/go-secs/v2/hsms"

	"github.com/waferd/waferd/control"
)

var _ control.HostLink = (*Equipment)(nil)

// HostStatus describes the link for a console (control.HostLink).
func (e *Equipment) HostStatus() control.HostStatus {
	e.mu.Lock()
	defer e.mu.Unlock()
	host := e.peer
	if e.comm == CommNoSession {
		host = ""
	}
	return control.HostStatus{
		Listen: e.addr, DeviceID: e.cfg.DeviceID, Host: host, Communication: e.comm.String(),
		Control: e.ctl.String(), Remote: e.remote, Selected: e.ppExec, AlarmsSet: ids(e.al.set),
	}
}

// SetHostControl is the operator's control-state switch
// (control.HostLink): "online", "offline", "local" or "remote".
func (e *Equipment) SetHostControl(to string) (string, error) {
	in, ok := map[string]controlInput{"online": opOnline, "offline": opOffline, "local": opLocal, "remote": opRemote}[to]
	if !ok {
		return "", fmt.Errorf("gem: %q: want online, offline, local or remote", to)
	}
	e.control(in, "operator")
	return e.controlState().String(), nil
}

// onSocket follows the sockets the HSMS layer accepts, to name the host
// (cheap: it runs on the accepting goroutine).
func (e *Equipment) onSocket(ev hsms.SocketEvent) {
	addr := ""
	if ev.Remote != nil {
		addr = ev.Remote.String()
	}
	switch ev.Kind {
	case hsms.SocketAccepted:
		e.mu.Lock()
		if e.sockets == nil {
			e.sockets = map[uint64]string{}
		}
		e.sockets[ev.Socket] = addr
		e.mu.Unlock()
		e.log.Infof("host connection from %s", addr)
	case hsms.SocketRefused:
		e.log.Warnf("refused a second host connection from %s: a session is live (HSMS-SS: one host at a time)", addr)
	case hsms.SocketClosed:
		e.mu.Lock()
		delete(e.sockets, ev.Socket)
		e.mu.Unlock()
	}
}

// peerOf is the address of socket (for a selected session). e.mu is held.
func (e *Equipment) peerOf(socket uint64) string {
	if a, ok := e.sockets[socket]; ok {
		return a
	}
	return (&net.TCPAddr{}).String()
}
