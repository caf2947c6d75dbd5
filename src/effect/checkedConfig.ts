// Options read from Config and checked as their constructor checks them (src/iip/optionLimits.ts),
// so that a setting out of range is the ConfigError the layerConfig types promise, naming the
// setting, and not a defect at construction.
import * as Config from "effect/Config"
import { SourceError } from "effect/ConfigProvider"
import { OptionInvalid } from "../iip/optionLimits.ts"

/** `config`, failing with a ConfigError where `check` refuses its value; `settings` names the setting of each option. */
export const checkedConfig = <A>(config: Config.Config<A>, check: (options: A) => void, settings: Readonly<Record<string, string>>): Config.Config<A> =>
  Config.flatMap(config, (options) => {
    try {
      check(options)
      return Config.succeed(options)
    } catch (error) {
      if (!(error instanceof OptionInvalid)) throw error
      // The option is the last word of its name ("IipClient requestTimeoutMs").
      const option = error.option.slice(error.option.lastIndexOf(" ") + 1)
      return Config.fail(new SourceError({ message: `${settings[option] ?? option}: ${error.message}`, cause: error }))
    }
  })
