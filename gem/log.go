package gem

import (
	"fmt"
	"slices"
	"strings"

	"github.com/arloliu/go-secs/v2/logger"

	"github.com/waferd/waferd/internal/logging"
)

// libLogger routes the HSMS layer's log into ours. The layer narrates
// every step at info and reports what it copes with at warn: both are
// debug and info here (this package logs what matters to a person);
// Fatal never exits.
type libLogger struct {
	l      *logging.Log
	fields []any
}

var _ logger.Logger = libLogger{}

func (g libLogger) Debug(msg string, kv ...any) { g.l.Debugf("%s", g.line(msg, kv)) }
func (g libLogger) Info(msg string, kv ...any)  { g.l.Debugf("%s", g.line(msg, kv)) }
func (g libLogger) Warn(msg string, kv ...any)  { g.l.Infof("%s", g.line(msg, kv)) }
func (g libLogger) Error(msg string, kv ...any) { g.l.Errorf("%s", g.line(msg, kv)) }
func (g libLogger) Fatal(msg string, kv ...any) { g.l.Errorf("%s", g.line(msg, kv)) }

func (g libLogger) With(kv ...any) logger.Logger {
	return libLogger{l: g.l, fields: append(slices.Clip(g.fields), kv...)}
}

func (g libLogger) Level() logger.LogLevel   { return logger.DebugLevel }
func (g libLogger) SetLevel(logger.LogLevel) {}

func (g libLogger) line(msg string, kv []any) string {
	var b strings.Builder
	b.WriteString(msg)
	kv = append(slices.Clip(g.fields), kv...)
	for i := 0; i+1 < len(kv); i += 2 {
		fmt.Fprintf(&b, " %v=%v", kv[i], kv[i+1])
	}
	return b.String()
}
