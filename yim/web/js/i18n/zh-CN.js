// 简体中文: English text (as written in the t()/tn() call) -> Chinese. For tn() the key is
// the English plural form. Keep {placeholders} unchanged; group entries by view.
export const ZH_CN = {
  // User avatars (Settings picker)
  "That picture is too large. Choose a smaller one.": "图片太大，请选择小一些的图片。",
  "That file is not a picture. Choose a JPEG, PNG, GIF, WebP or AVIF image.": "该文件不是图片，请选择 JPEG、PNG、GIF、WebP 或 AVIF 图片。",
  "That kind of picture is not accepted. Choose a JPEG, PNG, GIF, WebP or AVIF image.": "不支持这种图片格式，请选择 JPEG、PNG、GIF、WebP 或 AVIF 图片。",
  "That picture cannot be read. Choose another one.": "无法读取该图片，请换一张。",
  "Picture file": "图片文件",
  "Your picture is set. Others see it now.": "头像已设置，其他人现在就能看到。",
  "Upload a picture": "上传头像",
  "Your picture is removed. Others see your initials.": "头像已移除，其他人将看到你名字的首字。",
  "Remove picture": "移除头像",
  Picture: "头像",
};
