package cmd

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/spf13/cobra"
	"golang.org/x/term"
)

// maxPromptLine caps one line read at the login prompt.
const maxPromptLine = 4096

func (a *app) loginCmd() *cobra.Command {
	var ak, sk string
	c := &cobra.Command{
		Use:   "login [-u <access key> -p <secret key>] [--api <endpoint>]",
		Short: "Check a key pair against the platform and remember it",
		Long: `login checks the keys with the admin API (whoami) and stores the endpoint and
the keys in ~/.qdoractl/config.yaml (mode 0600). Without -u/-p it prompts for
them on standard input. A config file that cannot be parsed is ignored and,
once the keys are checked, replaced.`,
		Example: `  qdoractl login -u <access key> -p <secret key>
  qdoractl login --api http://127.0.0.1:8090 -u AK -p SK
  qdoractl login        # prompts for the keys`,
		Args:        cobra.NoArgs,
		Annotations: map[string]string{replacesConfig: "yes"},
		RunE: func(cmd *cobra.Command, args []string) error {
			if ak == "" || sk == "" {
				if err := a.prompt(cmd.InOrStdin(), &ak, &sk); err != nil {
					return err
				}
			}
			endpoint := a.endpoint()
			c := a.newClient(endpoint, ak, sk)
			if c.Endpoint() == "" {
				return usagef("endpoint %q is not an http(s) URL", endpoint)
			}
			acct, err := c.Whoami(cmd.Context())
			if err != nil {
				return fmt.Errorf("login to %s: %w", c.Endpoint(), err)
			}
			if err := a.saveConfig(fileConfig{Endpoint: c.Endpoint(), AK: ak, SK: sk}); err != nil {
				return err
			}
			if a.badConfig != nil {
				fmt.Fprintf(a.stderr, "qdoractl: replaced %s, which could not be read: %v\n", a.configPath, a.badConfig)
			}
			return a.show(acct, func() error {
				name := acct.Name
				if name != "" {
					name = " (" + name + ")"
				}
				root := ""
				if acct.Root {
					root = ", root"
				}
				fmt.Fprintf(a.stdout, "Login success: account %s%s%s at %s\n", acct.ID, name, root, c.Endpoint())
				return nil
			})
		},
	}
	c.Flags().StringVarP(&ak, "ak", "u", "", "access key")
	c.Flags().StringVarP(&sk, "sk", "p", "", "secret key")
	return c
}

// prompt reads the missing keys from in, without echo on a terminal.
func (a *app) prompt(in io.Reader, ak, sk *string) error {
	br := bufio.NewReaderSize(in, maxPromptLine)
	readLine := func(label string, secret bool) (string, error) {
		fmt.Fprintf(a.stderr, "%s: ", label)
		if f, ok := in.(*os.File); ok && secret && term.IsTerminal(int(f.Fd())) {
			b, err := term.ReadPassword(int(f.Fd()))
			fmt.Fprintln(a.stderr)
			return strings.TrimSpace(string(b)), err
		}
		line, err := br.ReadString('\n')
		if err != nil && !(errors.Is(err, io.EOF) && line != "") {
			return "", fmt.Errorf("read %s: %w", strings.ToLower(label), err)
		}
		return strings.TrimSpace(line), nil
	}
	var err error
	if *ak == "" {
		if *ak, err = readLine("Access key", false); err != nil {
			return err
		}
	}
	if *sk == "" {
		if *sk, err = readLine("Secret key", true); err != nil {
			return err
		}
	}
	if *ak == "" || *sk == "" {
		return usagef("both an access key and a secret key are needed")
	}
	return nil
}

func (a *app) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "logout",
		Short:   "Forget the stored keys (the endpoint is kept)",
		Example: `  qdoractl logout`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			fc, err := a.readFileConfig()
			if err != nil {
				return err
			}
			fc.AK, fc.SK = "", ""
			if err := a.saveConfig(fc); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "Logout success")
			return nil
		},
	}
}

func (a *app) whoamiCmd() *cobra.Command {
	return &cobra.Command{
		Use:     "whoami",
		Short:   "Show the account of the configured keys",
		Example: `  qdoractl whoami`,
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := a.client()
			if err != nil {
				return err
			}
			acct, err := c.Whoami(cmd.Context())
			if err != nil {
				return err
			}
			return a.show(acct, func() error {
				fmt.Fprintf(a.stdout, "Id: %s\nName: %s\nAccess key: %s\nRoot: %v\nInstance limit: %d\nApplied: %s\nEndpoint: %s\n",
					acct.ID, orDash(acct.Name), acct.AccessKey, acct.Root, acct.Limit(), orDash(strings.Join(acct.Applied, " ")), c.Endpoint())
				return nil
			})
		},
	}
}
