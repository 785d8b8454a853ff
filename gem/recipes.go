package gem

import (
	"context"

	"github.com/arloliu/go-secs/v2/secs2"

	"github.com/waferd/waferd/control"
)

// Process programs: waferd's recipes (TOML text), named by PPID, the
// recipe's file name without ".toml". S7F19 lists them, S7F5 reads one,
// S7F3 stores one (validated completely first; nothing is stored for an
// invalid one). PPBODY is sent as binary (the text may hold UTF-8); ASCII
// is accepted too.

// ACKC7 codes (E5).
const (
	ackc7OK       = 0
	ackc7Denied   = 1 // permission not granted: the recipe is refused
	ackc7Length   = 2 // length error
	ppChangeNew   = 1 // PPChangeStatus: created
	ppChangeEdit  = 2 // PPChangeStatus: edited
	maxPPIDLength = 80
)

// S7F19 → S7F20 L[n] PPID: the recipes a START can run.
func (e *Equipment) s7f19(_ context.Context, _ inbound, _ secs2.Item) (secs2.Item, error) {
	names, _, err := e.m.Recipes()
	if err != nil {
		e.log.Warnf("S7F19: %v", err) // the names that could be read are sent
	}
	items := make([]secs2.Item, 0, len(names))
	for _, n := range names {
		items = append(items, ascii(n))
	}
	return secs2.NewListItem(items...), nil
}

// S7F5 PPID → S7F6 L[2] PPID PPBODY, or L[0] when there is no such recipe.
func (e *Equipment) s7f5(_ context.Context, _ inbound, body secs2.Item) (secs2.Item, error) {
	ppid, err := text(body, "S7F5 PPID")
	if err != nil {
		return nil, err
	}
	data, err := e.m.RecipeText(ppid)
	if err != nil {
		e.log.Infof("S7F5 %s: %s", ppid, firstLine(err))
		return secs2.NewListItem(), nil
	}
	return secs2.NewListItem(ascii(ppid), secs2.NewBinaryItem(data)), nil
}

// S7F3 L[2] PPID PPBODY → S7F4 ACKC7: 0 stored, 1 refused (the recipe does
// not validate, a bad name, no recipe directory, the write failed: the
// reason's first line is logged and told to the host), 2 too long.
func (e *Equipment) s7f3(_ context.Context, _ inbound, body secs2.Item) (secs2.Item, error) {
	top, err := list(body, 2, "S7F3")
	if err != nil {
		return nil, err
	}
	ppid, err := text(top[0], "S7F3 PPID")
	if err != nil {
		return nil, err
	}
	var data []byte
	switch pp := top[1]; {
	case pp.IsBinary():
		data, err = pp.ToBinary()
	case pp.IsASCII():
		var s string
		s, err = pp.ToASCII()
		data = []byte(s)
	default:
		return nil, illegal("S7F3 PPBODY: want binary or ASCII, got %s", typeOf(pp))
	}
	if err != nil {
		return nil, illegal("S7F3 PPBODY: %v", err)
	}
	if len(data) > control.MaxRecipeBytes || len(ppid) > maxPPIDLength {
		e.log.Warnf("S7F3 %.80s: %d bytes: refused (length error; at most %d bytes, a PPID of %d characters)", ppid, len(data), control.MaxRecipeBytes, maxPPIDLength)
		return bin(ackc7Length), nil
	}
	created, err := e.m.SaveRecipe(ppid, data)
	if err != nil {
		line := firstLine(err)
		e.log.Warnf("S7F3 %s refused: %s", ppid, line)
		e.tell("recipe %s refused: %s", ppid, line)
		return bin(ackc7Denied), nil
	}
	status := ppChangeEdit
	if created {
		status = ppChangeNew
	}
	e.log.Noticef("host stored recipe %s (%d bytes)", ppid, len(data))
	e.note(CEPPChanged, frame{ppChange: ppid, ppStatus: status})
	return bin(ackc7OK), nil
}
