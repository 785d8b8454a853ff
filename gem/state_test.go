package gem

import (
	"testing"

	"github.com/stretchr/testify/assert"
	"github.com/stretchr/testify/require"

	"github.com/waferd/waferd/machine"
	"github.com/waferd/waferd/stop"
)

// TestCommState walks E30's communication state diagram.
func TestCommState(t *testing.T) {
	cases := []struct {
		from CommState
		in   commInput
		to   CommState
	}{
		{CommNoSession, commSelected, CommWaitCRA},
		{CommNoSession, commHostAsked, CommNoSession}, // no session, no message
		{CommNoSession, commAccepted, CommNoSession},
		{CommWaitCRA, commAccepted, CommCommunicating},
		{CommWaitCRA, commDenied, CommWaitDelay},
		{CommWaitCRA, commHostAsked, CommCommunicating},
		{CommWaitCRA, commLost, CommNoSession},
		{CommWaitDelay, commRetry, CommWaitCRA},
		{CommWaitDelay, commHostAsked, CommCommunicating},
		{CommWaitDelay, commAccepted, CommWaitDelay}, // a late answer to an abandoned S1F13
		{CommCommunicating, commFailed, CommWaitDelay},
		{CommCommunicating, commDenied, CommCommunicating}, // the host's own S1F13 made us communicating first
		{CommCommunicating, commHostAsked, CommCommunicating},
		{CommCommunicating, commLost, CommNoSession},
		{CommCommunicating, commRetry, CommCommunicating},
	}
	for _, c := range cases {
		assert.Equal(t, c.to, nextComm(c.from, c.in), "%s + %d", c.from, c.in)
	}
	assert.Equal(t, "communicating", CommCommunicating.String())
}

// TestControlState walks E30's control state diagram, with the online
// switch on remote and on local.
func TestControlState(t *testing.T) {
	cases := []struct {
		from   ControlState
		remote bool
		in     controlInput
		to     ControlState
		ack    byte
	}{
		{HostOffline, true, hostOnline, OnlineRemote, onlackAccepted},
		{HostOffline, false, hostOnline, OnlineLocal, onlackAccepted},
		{EquipmentOffline, true, hostOnline, EquipmentOffline, onlackRefused},
		{AttemptOnline, true, hostOnline, AttemptOnline, onlackRefused},
		{OnlineLocal, true, hostOnline, OnlineLocal, onlackAlready},
		{OnlineRemote, true, hostOffline, HostOffline, 0},
		{OnlineLocal, true, hostOffline, HostOffline, 0},
		{EquipmentOffline, true, hostOffline, EquipmentOffline, 0},
		{OnlineRemote, true, opLocal, OnlineLocal, 0},
		{OnlineLocal, true, opRemote, OnlineRemote, 0},
		{HostOffline, true, opRemote, HostOffline, 0}, // the switch only; still offline
		{OnlineRemote, true, opOffline, EquipmentOffline, 0},
		{HostOffline, true, opOffline, EquipmentOffline, 0},
		{EquipmentOffline, true, opOnline, AttemptOnline, 0},
		{HostOffline, true, opOnline, HostOffline, 0}, // already wants online: the host decides
		{AttemptOnline, true, attemptOK, OnlineRemote, 0},
		{AttemptOnline, false, attemptOK, OnlineLocal, 0},
		{AttemptOnline, true, attemptFailed, EquipmentOffline, 0},
		{OnlineRemote, true, attemptFailed, OnlineRemote, 0}, // a late answer changes nothing
	}
	for _, c := range cases {
		to, ack := nextControl(c.from, c.remote, c.in)
		assert.Equal(t, c.to, to, "%s + %d (remote %v)", c.from, c.in, c.remote)
		assert.Equal(t, c.ack, ack, "%s + %d", c.from, c.in)
	}
	for _, s := range []string{"equipment-offline", "host-offline", "online-local", "online-remote"} {
		_, err := ParseControlState(s)
		require.NoError(t, err, s)
	}
	_, err := ParseControlState("online")
	assert.ErrorContains(t, err, `unknown control state "online"`)
	assert.True(t, OnlineLocal.Online())
	assert.False(t, AttemptOnline.Online())
}

// TestReports: define, link and enable as E5 says: all or nothing,
// deleting with empty lists, and the codes.
func TestReports(t *testing.T) {
	r := newReports()
	assert.Equal(t, byte(drackNoVID), r.define([]reportDef{{id: 1, vids: []uint32{SVClock, 99}}}))
	assert.Empty(t, r.defs, "nothing defined when one VID is unknown")
	require.Equal(t, byte(drackAccepted), r.define([]reportDef{{id: 1, vids: []uint32{SVClock}}, {id: 2, vids: []uint32{DVSiteIndex}}}))
	assert.Equal(t, byte(drackDefined), r.define([]reportDef{{id: 1, vids: []uint32{SVRunID}}}))
	assert.Equal(t, byte(drackDefined), r.define([]reportDef{{id: 3, vids: []uint32{SVRunID}}, {id: 3, vids: []uint32{SVRunID}}}))

	assert.Equal(t, byte(lrackNoCEID), r.link([]eventLink{{ceid: 5, rptids: []uint32{1}}}))
	assert.Equal(t, byte(lrackNoRPTID), r.link([]eventLink{{ceid: CERunStarted, rptids: []uint32{9}}}))
	require.Equal(t, byte(lrackAccepted), r.link([]eventLink{{ceid: CESiteCompleted, rptids: []uint32{1, 2}}, {ceid: CERunStarted, rptids: []uint32{2}}}))
	assert.Equal(t, byte(lrackLinked), r.link([]eventLink{{ceid: CESiteCompleted, rptids: []uint32{1}}}))
	assert.Equal(t, []uint32{SVClock, DVSiteIndex}, r.vidsOf(CESiteCompleted))

	f := &frame{run: runData{Site: 4}}
	body, ok := r.s6f11(9, CESiteCompleted, f)
	require.True(t, ok)
	assert.Contains(t, body.ToSML(), "<U4[1] 4>", "SiteIndex in SiteCompleted")
	body, ok = r.s6f11(10, CERunStarted, f)
	require.True(t, ok)
	assert.Contains(t, body.ToSML(), "<L[0]>", "SiteIndex has no value in RunStarted")

	assert.Equal(t, byte(erackNoCEID), r.enable(false, []uint32{CERunStarted, 5}))
	require.Equal(t, byte(erackAccepted), r.enable(false, []uint32{CERunStarted}))
	_, ok = r.s6f11(11, CERunStarted, f)
	assert.False(t, ok, "disabled")
	require.Equal(t, byte(erackAccepted), r.enable(false, nil))
	assert.Empty(t, r.enabledIDs())
	require.Equal(t, byte(erackAccepted), r.enable(true, nil))
	assert.Len(t, r.enabledIDs(), len(events))

	// Deleting report 2 unlinks it; an empty S2F33 deletes everything.
	require.Equal(t, byte(drackAccepted), r.define([]reportDef{{id: 2}}))
	assert.Equal(t, []uint32{SVClock}, r.vidsOf(CESiteCompleted))
	require.Equal(t, byte(lrackAccepted), r.link([]eventLink{{ceid: CESiteCompleted}}))
	assert.Empty(t, r.vidsOf(CESiteCompleted))
	require.Equal(t, byte(drackAccepted), r.define(nil))
	assert.Empty(t, r.defs)
}

// TestAlarmForLatch: each latch sets the alarm of its reason.
func TestAlarmForLatch(t *testing.T) {
	assert.Equal(t, uint32(ALEStop), alarmForLatch(machine.EStop, stop.EStop))
	assert.Equal(t, uint32(ALDeviceFault), alarmForLatch(machine.Faulted, stop.Fault))
	assert.Equal(t, uint32(ALWatchdog), alarmForLatch(machine.Faulted, stop.Watchdog))
	assert.Equal(t, uint32(ALHostAbort), alarmForLatch(machine.Faulted, stop.Abort))
	assert.Equal(t, uint32(ALSafeStopIncomplete), alarmForLatch(machine.Faulted, stop.Operator))
	assert.Equal(t, uint32(ALSafeStopIncomplete), alarmForLatch(machine.Faulted, stop.None))
	assert.Zero(t, alarmForLatch(machine.Idle, stop.Fault))
	assert.Equal(t, stop.Fault, reasonOfLatch("fault: stage: lost"))
	assert.Equal(t, stop.None, reasonOfLatch("safe stop incomplete: operator: x"))
	for _, al := range alarms {
		assert.LessOrEqual(t, len(al.text), 40, "ALTX is at most 40 characters: %q", al.text)
	}
}
