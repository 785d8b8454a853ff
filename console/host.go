package console

import (
	"context"
	"fmt"
	"strings"
)

// The gem command: the factory host's link (package gem), as a console
// sees it through control.HostLink.

func checkGem(a []string) error {
	if len(a) == 1 {
		switch strings.ToLower(a[0]) {
		case "online", "offline", "local", "remote":
		default:
			return fmt.Errorf("gem: %s: want online, offline, local or remote", quote(a[0]))
		}
	}
	return nil
}

func cmdGem(s *session, _ context.Context, c Command) {
	h := s.o.Host
	if h == nil {
		s.errorf("gem: the factory host's interface is off: set [gem] enabled = true, or serve --gem ADDR")
		return
	}
	if len(c.Args) == 1 {
		state, err := h.SetHostControl(strings.ToLower(c.Args[0]))
		if err != nil {
			s.failed("gem", err)
			return
		}
		s.printf("gem: control state %s", state)
		return
	}
	st := h.HostStatus()
	host := "none connected"
	if st.Host != "" {
		host = st.Host
	}
	mode := "local"
	if st.Remote {
		mode = "remote"
	}
	sel := st.Selected
	if sel == "" {
		sel = "none"
	}
	alarms := "none set"
	if len(st.AlarmsSet) > 0 {
		alarms = fmt.Sprintf("set: %v (reset clears the latch, and them)", st.AlarmsSet)
	}
	s.print(
		fmt.Sprintf("%-9s HSMS-SS on %s, device id %d", "gem", st.Listen, st.DeviceID),
		fmt.Sprintf("%-9s %s, %s", "host", host, st.Communication),
		fmt.Sprintf("%-9s %s (online goes %s); recipe selected by the host: %s", "control", st.Control, mode, sel),
		fmt.Sprintf("%-9s %s", "alarms", alarms),
	)
}
