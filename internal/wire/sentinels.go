package wire

import (
	"errors"
	"fmt"
	"sync"
)

// Sentinel errors keep their identity across processes through Error.Code: a worker names the registered sentinel
// its error matches, and the caller rebuilds an error that matches the sentinel registered under that code.
var sentinels = struct {
	sync.RWMutex
	byCode map[string]error
	order  []registered
}{byCode: make(map[string]error)}

type registered struct {
	code string
	err  error
}

// RegisterSentinel registers err under code. Registering the same pair again is a no-op; another error under a
// code already taken panics, as a programming error.
func RegisterSentinel(code string, err error) {
	sentinels.Lock()
	defer sentinels.Unlock()
	if prev, dup := sentinels.byCode[code]; dup {
		if prev == err {
			return
		}
		panic(fmt.Sprintf("fleet: RegisterError: another error is registered with message %q", code))
	}
	sentinels.byCode[code] = err
	sentinels.order = append(sentinels.order, registered{code, err})
}

// SentinelCode is the code of the registered sentinel err matches, "" for none. The most recently registered match
// wins, so a user's sentinel is preferred over the context errors it may wrap.
func SentinelCode(err error) string {
	sentinels.RLock()
	defer sentinels.RUnlock()
	for i := len(sentinels.order) - 1; i >= 0; i-- {
		if errors.Is(err, sentinels.order[i].err) {
			return sentinels.order[i].code
		}
	}
	return ""
}

// Sentinel is the error registered under code, nil for none.
func Sentinel(code string) error {
	sentinels.RLock()
	defer sentinels.RUnlock()
	return sentinels.byCode[code]
}
