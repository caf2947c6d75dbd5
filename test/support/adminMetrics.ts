// A sidecar's metrics as a test reads them over its admin port (GET /metrics, the scrape an
// operator's Prometheus makes), for tests that run the sidecar with an admin listener.
import * as http from "node:http"

/** The admin listener's /metrics text. */
export const scrapeMetrics = (admin: string): Promise<string> =>
  new Promise((resolve, reject) => {
    http.get(`${admin}/metrics`, (res) => {
      let text = ""
      res.setEncoding("utf8")
      res.on("data", (part: string) => (text += part))
      res.on("end", () => resolve(text))
    }).on("error", reject)
  })

/** The value of the unlabelled sample `name` (NaN when the scrape has none). */
export const unlabelledValue = async (admin: string, name: string): Promise<number> => {
  const line = (await scrapeMetrics(admin)).split("\n").find((l) => l.startsWith(`${name} `))
  return Number(line?.slice(line.lastIndexOf(" ") + 1))
}
