-- Learn how a deployment counts prompts: fold one reported count into both rules' ratios and errors.
--
-- KEYS[1]  {gw}:calib:in:<deployment>   hash: tok, chr (reported / counted, moving averages for the
--                                       tokenizer's count and the characters/4 count), etok, echr (moving
--                                       averages of each rule's error, |ln(reported / predicted)|), n
-- ARGV[1]  the tokenizer's count of the prompt
-- ARGV[2]  the prompt's characters/4 count
-- ARGV[3]  the prompt tokens the provider reported
-- ARGV[4]  alpha, the weight of a new observation
--
-- Each rule's error is measured with the ratio it had before this observation, so it says how well
-- the rule predicts, not how well it fits. Returns n.
local tok_count, chr_count, reported, alpha = tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local h = redis.call('HMGET', KEYS[1], 'tok', 'chr', 'etok', 'echr', 'n')
local tok, chr, etok, echr, n = tonumber(h[1]), tonumber(h[2]), tonumber(h[3]) or 0, tonumber(h[4]) or 0, tonumber(h[5]) or 0
local function learn(ratio, err, count)
  local sample = reported / count
  if ratio == nil then return sample, err end
  err = err + alpha * (math.abs(math.log(sample / ratio)) - err)
  return ratio + alpha * (sample - ratio), err
end
tok, etok = learn(tok, etok, tok_count)
chr, echr = learn(chr, echr, chr_count)
redis.call('HSET', KEYS[1], 'tok', fmt(tok), 'chr', fmt(chr), 'etok', fmt(etok), 'echr', fmt(echr), 'n', n + 1)
return n + 1
