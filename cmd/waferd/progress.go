package main

import (
	"fmt"
	"io"
	"time"

	"github.com/waferd/waferd/inspection"
	"github.com/waferd/waferd/inspection/recipe"
	"github.com/waferd/waferd/internal/logging"
)

// progress prints "site k/N" lines: rewritten in place on a terminal, one
// line per site otherwise (logs, pipes).
type progress struct {
	w    io.Writer
	tty  bool
	open bool // a partial line is on the terminal
}

func newProgress(w io.Writer) *progress {
	return &progress{w: w, tty: logging.IsTerminal(w)}
}

func (p *progress) site(pr inspection.Progress) {
	line := fmt.Sprintf("site %d/%d  die %s  defects %d  elapsed %s  ETA %s",
		pr.Done, pr.Total, recipe.DieName(pr.Site.Die), pr.Defects,
		pr.Elapsed.Round(time.Second), pr.ETA.Round(time.Second))
	if p.tty {
		fmt.Fprintf(p.w, "\r\x1b[K%s", line)
		p.open = true
		return
	}
	fmt.Fprintln(p.w, line)
}

// end finishes a partial line.
func (p *progress) end() {
	if p.open {
		fmt.Fprintln(p.w)
		p.open = false
	}
}
