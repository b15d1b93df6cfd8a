package cmd

import (
	"strings"
	"testing"

	"github.com/doraproject/dora"
)

func TestAccountCommands(t *testing.T) {
	f := newFakeAPI(t, map[string]route{
		"POST /v1/accounts":            reply(201, dora.Account{ID: "42", Name: "bob", AccessKey: "AKbob", SecretKey: "SKbob", InstanceLimit: 3}),
		"GET /v1/accounts":             reply(200, []dora.Account{{ID: "1", Name: "root", AccessKey: "AKroot", Root: true}, {ID: "42", Name: "bob", AccessKey: "AKbob", Disabled: true}}),
		"POST /v1/accounts/42/disable": reply(200, dora.Account{ID: "42", Disabled: true}),
		"GET /v1/regions":              reply(200, []map[string]string{{"name": "z0", "desc": "local"}}),
	})
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"account", "create", "bob", "--limit", "3"}, []string{"Id: 42", "Access key: AKbob", "Secret key: SKbob", "Instance limit: 3"}},
		{[]string{"account", "list"}, []string{"Id  Name  AccessKey  Root   Disabled  InstanceLimit  Created", "42  bob   AKbob      false  true      5"}},
		{[]string{"account", "disable", "42"}, []string{"Account 42 disabled"}},
		{[]string{"region"}, []string{"Name  Desc", "z0    local"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			r := mustOK(t, runCLI(t, f, "", tt.args...))
			for _, w := range tt.want {
				if !strings.Contains(r.stdout, w) {
					t.Fatalf("stdout lacks %q:\n%s", w, r.stdout)
				}
			}
		})
	}
	jsonEq(t, f.last(t, "POST /v1/accounts").Body, `{"name":"bob","instanceLimit":3}`)
}
