// Command gitops-health judges a Kubernetes object (JSON on stdin) the way GitOps tools do and
// prints {"status","message"} as JSON:
//
//	gitops-health lua <health.lua>   Argo CD's custom health check, run by gopher-lua as Argo CD runs it
//	gitops-health kstatus            kstatus' Compute, which Flux and kubectl wait rely on
package main

import (
	"encoding/json"
	"fmt"
	"os"

	lua "github.com/yuin/gopher-lua"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"sigs.k8s.io/cli-utils/pkg/kstatus/status"
)

type verdict struct {
	Status  string `json:"status"`
	Message string `json:"message"`
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "gitops-health:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	var object map[string]any
	if err := json.NewDecoder(os.Stdin).Decode(&object); err != nil {
		return fmt.Errorf("reading the object from stdin: %w", err)
	}
	var v verdict
	var err error
	switch {
	case len(args) == 2 && args[0] == "lua":
		v, err = runLua(args[1], object)
	case len(args) == 1 && args[0] == "kstatus":
		v, err = runKstatus(object)
	default:
		return fmt.Errorf("usage: gitops-health lua <script.lua> | gitops-health kstatus  (object as JSON on stdin)")
	}
	if err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(v)
}

// runLua mirrors Argo CD's health Lua VM: only the package, base and table libraries, the object as
// the global `obj`, the script's return value a table with status and message.
func runLua(script string, object map[string]any) (verdict, error) {
	l := lua.NewState(lua.Options{SkipOpenLibs: true})
	defer l.Close()
	for name, open := range map[string]lua.LGFunction{
		lua.LoadLibName: lua.OpenPackage, lua.BaseLibName: lua.OpenBase, lua.TabLibName: lua.OpenTable,
	} {
		l.Push(l.NewFunction(open))
		l.Push(lua.LString(name))
		l.Call(1, 0)
	}
	l.SetGlobal("obj", toLua(l, object))
	if err := l.DoFile(script); err != nil {
		return verdict{}, fmt.Errorf("running %s: %w", script, err)
	}
	result, ok := l.Get(-1).(*lua.LTable)
	if !ok {
		return verdict{}, fmt.Errorf("%s returned %s, not a table", script, l.Get(-1).Type())
	}
	return verdict{Status: lua.LVAsString(result.RawGetString("status")), Message: lua.LVAsString(result.RawGetString("message"))}, nil
}

func toLua(l *lua.LState, value any) lua.LValue {
	switch v := value.(type) {
	case map[string]any:
		table := l.NewTable()
		for key, item := range v {
			table.RawSetString(key, toLua(l, item))
		}
		return table
	case []any:
		table := l.NewTable()
		for _, item := range v {
			table.Append(toLua(l, item))
		}
		return table
	case string:
		return lua.LString(v)
	case float64:
		return lua.LNumber(v)
	case bool:
		return lua.LBool(v)
	default:
		return lua.LNil
	}
}

func runKstatus(object map[string]any) (verdict, error) {
	// Through JSON again so numbers become int64 as in objects read from the API server.
	raw, err := json.Marshal(object)
	if err != nil {
		return verdict{}, err
	}
	u := &unstructured.Unstructured{}
	if err := u.UnmarshalJSON(raw); err != nil {
		return verdict{}, fmt.Errorf("decoding the object: %w", err)
	}
	result, err := status.Compute(u)
	if err != nil {
		return verdict{}, err
	}
	return verdict{Status: result.Status.String(), Message: result.Message}, nil
}
