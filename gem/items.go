package gem

import (
	"errors"
	"fmt"
	"math"

	"github.com/arloliu/go-secs/v2/secs2"
)

// Reading the host's message bodies. A body that is not in the form the
// message's definition (SEMI E5) gives is illegal data: the handler
// returns an *illegalData and the message is answered with S9F7 instead of
// its reply. Ids (VID, CEID, RPTID, ALID, DATAID) are accepted in any
// integer format, as long as they are not negative and fit in 32 bits.

// illegalData says why a body is not what its message defines.
type illegalData struct{ why string }

func (e *illegalData) Error() string { return "illegal data: " + e.why }

func illegal(format string, args ...any) error {
	return &illegalData{why: fmt.Sprintf(format, args...)}
}

// isIllegal reports whether err is illegal data.
func isIllegal(err error) bool {
	var e *illegalData
	return errors.As(err, &e)
}

// list returns the items of a list of n items (n < 0: any number).
func list(it secs2.Item, n int, what string) ([]secs2.Item, error) {
	if it == nil || !it.IsList() {
		return nil, illegal("%s: want a list, got %s", what, typeOf(it))
	}
	items, err := it.ToList()
	if err != nil {
		return nil, illegal("%s: %v", what, err)
	}
	if n >= 0 && len(items) != n {
		return nil, illegal("%s: want a list of %d, got %d items", what, n, len(items))
	}
	return items, nil
}

// id reads one id: one integer value, 0 ≤ v < 2^32.
func id(it secs2.Item, what string) (uint32, error) {
	ids, err := idList(it, what)
	if err != nil {
		return 0, err
	}
	if len(ids) != 1 {
		return 0, illegal("%s: want one value, got %d", what, len(ids))
	}
	return ids[0], nil
}

// idList reads an integer array item (any width, signed or not) as ids.
func idList(it secs2.Item, what string) ([]uint32, error) {
	var out []uint32
	switch {
	case it == nil:
		return nil, illegal("%s: missing", what)
	case isUint(it):
		vs, err := it.ToUint()
		if err != nil {
			return nil, illegal("%s: %v", what, err)
		}
		for _, v := range vs {
			if v > math.MaxUint32 {
				return nil, illegal("%s: %d is out of range", what, v)
			}
			out = append(out, uint32(v))
		}
	case isInt(it):
		vs, err := it.ToInt()
		if err != nil {
			return nil, illegal("%s: %v", what, err)
		}
		for _, v := range vs {
			if v < 0 || v > math.MaxUint32 {
				return nil, illegal("%s: %d is out of range", what, v)
			}
			out = append(out, uint32(v))
		}
	default:
		return nil, illegal("%s: want an integer, got %s", what, typeOf(it))
	}
	return out, nil
}

// idsOfList reads a list of single ids (L[n] <U4 id>...), as S1F3 and
// S2F37 carry them.
func idsOfList(it secs2.Item, what string) ([]uint32, error) {
	items, err := list(it, -1, what)
	if err != nil {
		return nil, err
	}
	out := make([]uint32, 0, len(items))
	for i, x := range items {
		v, err := id(x, fmt.Sprintf("%s[%d]", what, i))
		if err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, nil
}

// text reads an ASCII item.
func text(it secs2.Item, what string) (string, error) {
	if it == nil || !it.IsASCII() {
		return "", illegal("%s: want ASCII, got %s", what, typeOf(it))
	}
	s, err := it.ToASCII()
	if err != nil {
		return "", illegal("%s: %v", what, err)
	}
	return s, nil
}

// boolean reads a BOOLEAN item of one value (or a one-byte binary, which
// hosts send for CEED too).
func boolean(it secs2.Item, what string) (bool, error) {
	switch {
	case it != nil && it.IsBoolean() && it.Size() == 1:
		return it.BoolAt(0)
	case it != nil && it.IsBinary() && it.Size() == 1:
		b, err := it.ByteAt(0)
		return b != 0, err
	}
	return false, illegal("%s: want one BOOLEAN, got %s", what, typeOf(it))
}

// binaryByte reads a one-byte binary item (ALED, TID).
func binaryByte(it secs2.Item, what string) (byte, error) {
	if it == nil || !it.IsBinary() || it.Size() != 1 {
		return 0, illegal("%s: want one binary byte, got %s", what, typeOf(it))
	}
	return it.ByteAt(0)
}

func isUint(it secs2.Item) bool {
	return it.IsUint8() || it.IsUint16() || it.IsUint32() || it.IsUint64()
}

func isInt(it secs2.Item) bool {
	return it.IsInt8() || it.IsInt16() || it.IsInt32() || it.IsInt64()
}

// typeOf names an item's format for an error message.
func typeOf(it secs2.Item) string {
	if it == nil {
		return "nothing"
	}
	if it.IsEmpty() {
		return "an empty body"
	}
	return it.Type()
}
