package main

import (
	"fmt"
	"net"

	"github.com/waferd/waferd/config"
	"github.com/waferd/waferd/gem"
	"github.com/waferd/waferd/internal/logging"
)

// gemConfig is the equipment interface's configuration from [gem].
func gemConfig(c config.GEM, logs *logging.Root) gem.Config {
	ctl := gem.HostOffline
	switch c.InitialControl {
	case "equipment-offline":
		ctl = gem.EquipmentOffline
	case "online":
		ctl = gem.OnlineLocal
		if c.OnlineMode == "remote" {
			ctl = gem.OnlineRemote
		}
	}
	return gem.Config{
		Listen: c.Listen, DeviceID: uint16(c.DeviceID),
		T3: config.MS(c.T3MS), T5: config.MS(c.T5MS), T6: config.MS(c.T6MS), T7: config.MS(c.T7MS), T8: config.MS(c.T8MS),
		Linktest: config.MS(c.LinktestMS), EstablishRetry: config.MS(c.EstablishRetryMS),
		InitialControl: ctl, Remote: c.OnlineMode == "remote",
		Model: "waferd", Revision: version, Log: logs.For("gem"),
	}
}

// checkGemFlag checks serve's --gem ADDR.
func checkGemFlag(addr string) error {
	if _, _, err := net.SplitHostPort(addr); err != nil {
		return fmt.Errorf("--gem %q: want host:port such as 0.0.0.0:5000 (%v)", addr, err)
	}
	return nil
}
